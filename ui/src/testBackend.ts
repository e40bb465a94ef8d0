// An in-memory Backend for tests and for the editor in a plain browser: files live in a
// map seeded with the example workflows, validation covers what the editor can break
// (unknown `needs`, cycles, missing prompts), and a run replays the engine's event
// sequence step by step in dependency order with a few streamed tokens each.
import { parseWorkflow, reaches } from './workflow';
import type { Backend, Diagnostic, EngineEvent, RunHandle } from './backend';

const examples = import.meta.glob('../../workflows/*.yaml', {
  query: '?raw',
  import: 'default',
  eager: true,
}) as Record<string, string>;

export class TestBackend implements Backend {
  files = new Map<string, string>();

  constructor() {
    for (const [path, text] of Object.entries(examples)) {
      this.files.set(`workflows/${path.split('/').pop()}`, text);
    }
  }

  async models() {
    return [
      { reference: 'ollama:llama3.1:8b', locality: 'local' as const, reason: 'installed Ollama model, family `llama3.1`', contextLength: 131072 },
      { reference: 'openai:gpt-4o-mini', locality: 'cloud' as const, reason: 'configured cloud model', contextLength: 128000 },
      { reference: 'embedded:smollm2-135m-instruct', locality: 'embedded' as const, reason: 'embedded model (last resort)', contextLength: 4096 },
    ];
  }

  async listWorkflows() {
    return [...this.files.keys()].sort();
  }

  async templates() {
    return Object.entries(examples).map(([path, text]) => ({
      name: path.split('/').pop()!.replace(/\.yaml$/, ''),
      text,
    }));
  }

  async readWorkflow(path: string) {
    const text = this.files.get(path);
    if (text === undefined) throw new Error(`${path}: no such file`);
    return text;
  }

  async writeWorkflow(path: string, text: string) {
    this.files.set(path, text);
  }

  async validate(text: string): Promise<Diagnostic[]> {
    const wf = parseWorkflow(text);
    const out: Diagnostic[] = wf.errors.map((e) => ({
      code: 'syntax',
      message: e.message,
      span: { line: e.line, column: e.column },
    }));
    const ids = new Set(wf.steps.map((s) => s.id));
    const edges = wf.steps.flatMap((s) => s.needs.map((n) => ({ source: n, target: s.id })));
    for (const s of wf.steps) {
      for (const n of s.needs) {
        if (!ids.has(n)) {
          out.push({ code: 'unknown_need', message: `\`needs\` names unknown step \`${n}\``, step: s.id, field: 'needs' });
        } else if (reaches(edges, s.id, n)) {
          out.push({ code: 'cycle', message: `the steps form a cycle through \`${s.id}\``, step: s.id, field: 'needs' });
        }
      }
      const required = s.kind === 'template' ? 'template' : 'prompt';
      if (!s.fields[required]) {
        out.push({ code: 'missing_field', message: `\`kind: ${s.kind}\` steps need a \`${required}\``, step: s.id, field: required });
      }
    }
    return out;
  }

  async run(text: string, _inputs: Record<string, string>, onEvent: (e: EngineEvent) => void): Promise<RunHandle> {
    const wf = parseWorkflow(text);
    const runId = `test-${Date.now()}`;
    let cancelled = false;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const done = (async () => {
      const started = Date.now();
      onEvent({ type: 'run_started', run_id: runId, workflow_id: wf.id, steps: wf.steps.length });
      const finished = new Set<string>();
      let remaining = [...wf.steps];
      while (remaining.length && !cancelled) {
        const ready = remaining.filter((s) => s.needs.every((n) => finished.has(n)));
        if (!ready.length) break;
        // Ready steps run side by side, as the engine runs them.
        await Promise.all(
          ready.map(async (step) => {
            // A step with a retry policy fails its first attempt once (to show retries).
            const flaky = step.fields.retry !== undefined;
            for (let attempt = 1; attempt <= (flaky ? 2 : 1); attempt++) {
              onEvent({ type: 'step_started', run_id: runId, step_id: step.id, attempt, model: 'embedded:smollm2-135m-instruct' });
              for (const t of ['Hello', ' from', ` ${step.id}`]) {
                await sleep(60);
                if (cancelled) break;
                onEvent({ type: 'token', run_id: runId, step_id: step.id, text: t });
              }
              if (cancelled) {
                onEvent({ type: 'step_skipped', run_id: runId, step_id: step.id, reason: 'cancelled' });
                return;
              }
              if (flaky && attempt === 1) {
                onEvent({ type: 'attempt_failed', run_id: runId, step_id: step.id, attempt, error_kind: 'transient', message: 'HTTP 503: overloaded' });
                continue;
              }
              onEvent({ type: 'step_succeeded', run_id: runId, step_id: step.id, model: 'embedded:smollm2-135m-instruct', duration_ms: 180 * attempt });
              finished.add(step.id);
            }
          }),
        );
        remaining = remaining.filter((s) => !finished.has(s.id));
      }
      onEvent({ type: 'run_finished', run_id: runId, status: cancelled ? 'cancelled' : 'succeeded', duration_ms: Date.now() - started });
    })();
    return { runId, cancel: () => { cancelled = true; }, done };
  }
}
