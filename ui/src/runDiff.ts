// Run-to-run diff: two stored runs of one workflow, step by step: what each step returned
// (a word diff by the `diff` library), the model, tokens, duration, cost and status, and
// whether anything changed. Steps are matched by id; a step in only one run is listed as
// added or removed.
import { diffWordsWithSpace, type Change } from 'diff';
import type { StoredRun } from './backend';

type StepRecord = StoredRun['steps'][number];

/** One side of a step's comparison (absent when the step is not in that run). */
export interface Side {
  status: string;
  model: string | null;
  /** Prompt + completion tokens, when the provider reported them. */
  tokens: number | null;
  durationMs: number;
  costUsd: number | null;
  attempts: number;
  output: string;
}

export interface StepDiff {
  stepId: string;
  before: Side | null;
  after: Side | null;
  /** The output as a word diff (before → after). */
  output: Change[];
  /** Field names that differ (`output`, `model`, `tokens`, `duration`, `cost`, `status`, `attempts`). */
  changed: string[];
}

function side(s: StepRecord | undefined): Side | null {
  if (!s) return null;
  return {
    status: s.status,
    model: s.model,
    tokens: s.usage ? s.usage.prompt_tokens + s.usage.completion_tokens : null,
    durationMs: s.duration_ms,
    costUsd: s.cost_usd ?? null,
    attempts: s.attempts.length,
    output: s.output_json != null ? JSON.stringify(s.output_json, null, 2) : (s.output ?? ''),
  };
}

/** The step-by-step diff of run `before` and run `after`, in the order the steps first ran. */
export function diffRuns(before: StoredRun, after: StoredRun): StepDiff[] {
  const ids: string[] = [];
  for (const s of [...before.steps, ...after.steps]) if (!ids.includes(s.step_id)) ids.push(s.step_id);
  return ids.map((stepId) => {
    const a = side(before.steps.find((s) => s.step_id === stepId));
    const b = side(after.steps.find((s) => s.step_id === stepId));
    const changed: string[] = [];
    if (!a || !b) changed.push(a ? 'removed' : 'added');
    else {
      if (a.output !== b.output) changed.push('output');
      if (a.model !== b.model) changed.push('model');
      if (a.tokens !== b.tokens) changed.push('tokens');
      if (a.durationMs !== b.durationMs) changed.push('duration');
      if (a.costUsd !== b.costUsd) changed.push('cost');
      if (a.status !== b.status) changed.push('status');
      if (a.attempts !== b.attempts) changed.push('attempts');
    }
    return { stepId, before: a, after: b, output: diffWordsWithSpace(a?.output ?? '', b?.output ?? ''), changed };
  });
}
