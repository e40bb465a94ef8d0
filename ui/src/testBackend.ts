// An in-memory Backend for tests and for the editor in a plain browser: files live in a
// map seeded with the example workflows, validation covers what the editor can break
// (unknown `needs`, cycles, missing prompts), and a run replays the engine's event
// sequence step by step in dependency order with a few streamed tokens each, and is kept
// in an in-memory history shaped like the store's records. A map or loop runs its body
// once per item (a JSON list literal's items, else two) or iteration (at most two), its
// steps recorded under their paths (`each[1].say`); an agent step records a fixed
// transcript (a model call asking for a tool, the tool call, the final answer); an `mcp`
// tool's discovery answers a fixed list.
import { flatSteps, parseWorkflow, reaches, type StepData } from './workflow';
import { KINDS } from './registry';
import type {
  Backend,
  Diagnostic,
  EngineEvent,
  HumanDecision,
  ModelsView,
  PendingQuestion,
  PullProgress,
  RunHandle,
  RunOptions,
  RunSummary,
  ServiceStatus,
  StoredRun,
  ToolFunction,
  TriggerView,
} from './backend';
import type { ModelCapability, StepRecord, TranscriptEntry } from './bindings';

/** The functions every `mcp` server offers here (a filesystem server's, as `tools/list` gives them). */
export const TEST_MCP_FUNCTIONS: ToolFunction[] = [
  { name: 'read_text_file', description: 'Read a file as text.', input_schema: { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] } },
  { name: 'write_file', description: 'Create or overwrite a file.', input_schema: { type: 'object', properties: { path: { type: 'string' }, content: { type: 'string' } } } },
  { name: 'list_directory', description: null, input_schema: { type: 'object' } },
];

/** How many items (a JSON list literal's) or iterations (the cap, at most two) a body runs here. */
function bodyRuns(step: StepData): number {
  if (step.kind === 'loop') return Math.min(2, Number(step.fields.max_iterations) || 1);
  try {
    const items = JSON.parse(String(step.fields.items ?? ''));
    if (Array.isArray(items)) return items.length;
  } catch {
    // An expression over the run: two items.
  }
  return 2;
}

/** An agent's transcript here: it asks for its first tool, reads the result, answers. */
function agentTranscript(step: StepData, model: string): TranscriptEntry[] {
  const tool = Array.isArray(step.fields.tools) && step.fields.tools.length ? String(step.fields.tools[0]) : 'notes';
  const call = { id: 'call_1_0', name: tool, arguments: { op: 'list' } };
  return [
    { type: 'model', iteration: 1, model, strategy: 'json_protocol', text: `{"tool": "${tool}", "args": {"op": "list"}}`, tool_calls: [call], prompt_tokens: 40, completion_tokens: 12, duration_ms: 90 },
    { type: 'tool', iteration: 1, id: 'call_1_0', name: tool, arguments: { op: 'list' }, ok: true, result: 'monday.md\ntuesday.md', duration_ms: 4 },
    { type: 'model', iteration: 2, model, strategy: 'json_protocol', text: '{"final": "Two notes: monday.md and tuesday.md"}', tool_calls: [], prompt_tokens: 70, completion_tokens: 10, duration_ms: 80 },
  ];
}

const examples = import.meta.glob('../../workflows/*.yaml', {
  query: '?raw',
  import: 'default',
  eager: true,
}) as Record<string, string>;

export class TestBackend implements Backend {
  files = new Map<string, string>();
  runs: StoredRun[] = [];
  keys = new Set<string>();
  folder = 'workflows';
  questions: PendingQuestion[] = [];
  private answers = new Map<string, (d: HumanDecision) => void>();

  constructor() {
    for (const [path, text] of Object.entries(examples)) {
      this.files.set(path.split('/').pop()!, text);
    }
  }

  async models() {
    return [
      { reference: 'ollama:llama3.1:8b', locality: 'local' as const, reason: 'installed Ollama model, family `llama3.1`', contextLength: 131072 },
      { reference: 'openai:gpt-4o-mini', locality: 'cloud' as const, reason: 'configured cloud model', contextLength: 128000 },
      { reference: 'embedded:smollm2-135m-instruct', locality: 'embedded' as const, reason: 'embedded model (last resort)', contextLength: 4096 },
    ];
  }

  async modelsView(): Promise<ModelsView> {
    const order = (await this.models()).map((m) => ({
      reference: m.reference,
      locality: m.locality,
      reason: m.reason,
      score: 1,
      context_length: m.contextLength ?? null,
    }));
    const model = (provider: string, name: string, locality: 'local' | 'cloud' | 'embedded', context: number, size: number | null) => ({
      provider,
      name,
      locality,
      context_length: context,
      size_bytes: size,
      parameter_size: null,
      quantization: null,
      capabilities: provider === 'ollama' ? (['completion', 'tools'] as ModelCapability[]) : [],
    });
    return {
      providers: [
        { id: 'ollama', locality: 'local', reachable: true, error: null, models: [model('ollama', 'llama3.1:8b', 'local', 131072, 4_920_753_328)] },
        { id: 'openai', locality: 'cloud', reachable: this.keys.has('openai'), error: this.keys.has('openai') ? null : 'no API key', models: [] },
        { id: 'embedded', locality: 'embedded', reachable: true, error: null, models: [model('embedded', 'smollm2-135m-instruct', 'embedded', 8192, 98_000_000)] },
      ],
      order,
      ollama_url: 'http://127.0.0.1:11434',
      embedded_path: '~/.local/share/nexus/models/smollm2-135m-instruct.gguf',
      embedded_present: true,
      keys: [{ provider: 'openai', in_keychain: this.keys.has('openai'), in_environment: false, keychain_error: null }],
    };
  }

  async pullModel(name: string, onProgress: (p: PullProgress) => void) {
    if (name.includes('missing')) throw new Error('pull model manifest: file does not exist');
    // As the app reports a pull: sums over the layers seen so far (a 900-byte model
    // layer, then a 100-byte one), so the downloaded bytes never go back.
    onProgress({ status: 'pulling manifest', total_bytes: null, completed_bytes: null, layers: 0 });
    for (const done of [0, 300, 600, 900]) {
      await new Promise((r) => setTimeout(r, 40));
      onProgress({ status: 'pulling 6a0746a1ec1a', total_bytes: 900, completed_bytes: done, layers: 1 });
    }
    for (const done of [0, 100]) {
      await new Promise((r) => setTimeout(r, 40));
      onProgress({ status: 'pulling 966de95ca8a6', total_bytes: 1000, completed_bytes: 900 + done, layers: 2 });
    }
    onProgress({ status: 'success', total_bytes: null, completed_bytes: null, layers: 2 });
  }

  async setApiKey(provider: string) {
    this.keys.add(provider);
  }

  async deleteApiKey(provider: string) {
    this.keys.delete(provider);
  }

  async settings() {
    return { workflows_folder: this.folder };
  }

  /** What the user picks in the next native dialog (null: they cancel). Tests set it. */
  dialogAnswer: string | null = null;

  async chooseWorkflowsFolder() {
    const folder = this.dialogAnswer;
    if (folder === null) return null;
    // Another folder starts empty here (the desktop app lists the real folder's files).
    if (folder !== this.folder) this.files.clear();
    this.folder = folder;
    return { workflows_folder: folder };
  }

  async chooseInputFile() {
    return this.dialogAnswer;
  }

  async useTemplate(name: string) {
    const template = (await this.templates()).find((t) => t.name === name);
    if (!template) throw new Error(`${name}: no such template`);
    return template.text;
  }

  async resume(runId: string): Promise<RunHandle> {
    const run = this.runs.find((r) => r.run_id.startsWith(runId));
    if (!run) throw new Error(`no run ${runId}`);
    // Runs here never outlive their process, so none is ever interrupted.
    throw new Error(`run ${run.run_id} has already finished (${run.status})`);
  }

  async listRuns(limit: number): Promise<RunSummary[]> {
    return this.runs.slice(0, limit).map((r) => ({
      run_id: r.run_id,
      workflow_id: r.workflow_id,
      status: r.status,
      started_at: r.started_at,
      finished_at: r.finished_at,
      trigger: r.trigger,
      steps: r.steps.length,
      tokens: r.steps.reduce((n, s) => n + (s.usage ? s.usage.prompt_tokens + s.usage.completion_tokens : 0), 0),
    }));
  }

  async getRun(runId: string): Promise<StoredRun> {
    const run = this.runs.find((r) => r.run_id.startsWith(runId));
    if (!run) throw new Error(`no run ${runId}`);
    return structuredClone(run);
  }

  async pendingQuestions() {
    return [...this.questions];
  }

  async answer(runId: string, stepId: string, decision: HumanDecision) {
    const key = `${runId}/${stepId}`;
    const resolve = this.answers.get(key);
    if (!resolve) throw new Error(`step ${stepId} of run ${runId} is not waiting for an answer`);
    this.answers.delete(key);
    this.questions = this.questions.filter((q) => !(q.run_id === runId && q.request.step_id === stepId));
    resolve(decision);
  }

  async listWorkflows() {
    return [...this.files.keys()].sort();
  }

  async templates() {
    return Object.entries(examples).map(([path, text]) => ({
      name: path.split('/').pop()!,
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
    const all = flatSteps(wf.steps);
    const ids = new Set(all.map((s) => s.id));
    const edges = all.flatMap((s) => s.needs.map((n) => ({ source: n, target: s.id })));
    for (const s of all) {
      for (const n of s.needs) {
        if (!ids.has(n)) {
          out.push({ code: 'unknown_need', message: `\`needs\` names unknown step \`${n}\``, step: s.id, field: 'needs' });
        } else if (reaches(edges, s.id, n)) {
          out.push({ code: 'cycle', message: `the steps form a cycle through \`${s.id}\``, step: s.id, field: 'needs' });
        }
      }
      // Templates read only known steps (the engine: plan/templates.rs, `unknown_step`).
      for (const field of ['prompt', 'system', 'template']) {
        const text = s.fields[field];
        if (typeof text !== 'string') continue;
        for (const m of text.matchAll(/\bsteps\.([a-z_][a-z0-9_]*)/g)) {
          if (!ids.has(m[1])) {
            out.push({ code: 'unknown_step', message: `template references unknown step \`steps.${m[1]}\``, step: s.id, field });
          }
        }
      }
      // The field the kind cannot do without, as the schema says (a body is `steps:`).
      const required = KINDS.find((k) => k.kind === s.kind)?.required ?? 'prompt';
      if (required && required !== 'steps' && (s.fields[required] === undefined || s.fields[required] === '')) {
        out.push({ code: 'missing_field', message: `\`kind: ${s.kind}\` steps need a \`${required}\``, step: s.id, field: required });
      }
    }
    return out;
  }

  async run(
    text: string,
    inputs: Record<string, string>,
    onEvent: (e: EngineEvent) => void,
    options: RunOptions = {},
  ): Promise<RunHandle> {
    const wf = parseWorkflow(text);
    const runId = `test-${Date.now()}-${this.runs.length}`;
    let cancelled = false;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const model = 'embedded:smollm2-135m-instruct';
    const startedIso = new Date().toISOString();
    const record: StoredRun = {
      run_id: runId,
      workflow_id: wf.id,
      workflow_name: null,
      workflow_version: null,
      file: options.file ?? null,
      inputs,
      trigger: null,
      status: 'running',
      outputs: null,
      error: null,
      started_at: startedIso,
      finished_at: null,
      steps: [],
      events: [],
      workflow: JSON.parse(JSON.stringify(wf.doc?.toJS() ?? {})),
      heartbeat_at: null,
      owner_pid: null,
    };
    this.runs.unshift(record);
    const emit = (e: EngineEvent) => {
      if (e.type !== 'token') record.events.push(e);
      onEvent(e);
    };
    // "Run up to this step": only it and its ancestors; "run from": reuse the others.
    // Edges as `source → target` (target needs source), as `reaches` reads them.
    const edges = wf.steps.flatMap((s) => s.needs.map((n) => ({ source: n, target: s.id })));
    const ids = wf.steps.map((s) => s.id);
    let steps = wf.steps;
    if (options.until) {
      const until = options.until;
      steps = steps.filter((s) => reaches(edges, s.id, until));
    }
    const finished = new Set<string>();
    if (options.from) {
      const from = options.from;
      const again = new Set(ids.filter((id) => reaches(edges, from, id)));
      for (const s of steps) if (!again.has(s.id)) finished.add(s.id);
      steps = steps.filter((s) => again.has(s.id));
    }
    const self = this;
    const done = (async () => {
      const started = Date.now();
      emit({ type: 'run_started', run_id: runId, workflow_id: wf.id, steps: steps.length });
      let remaining = [...steps];
      const failedSteps = new Set<string>();
      while (remaining.length && !cancelled) {
        const ready = remaining.filter((s) => s.needs.every((n) => finished.has(n)));
        if (!ready.length) break;
        // Ready steps run side by side, as the engine runs them.
        await Promise.all(
          ready.map(async (step) => {
            const stepStart = new Date().toISOString();
            const attempts: StepRecord['attempts'] = [];
            if (step.kind === 'approval') {
              const question = String(step.fields.prompt ?? 'Approve?');
              emit({ type: 'waiting_for_human', run_id: runId, step_id: step.id, question });
              const decision = await new Promise<HumanDecision>((resolve) => {
                this.answers.set(`${runId}/${step.id}`, resolve);
                this.questions.push({ run_id: runId, request: { kind: 'approval', run_id: runId, step_id: step.id, message: question } });
              });
              emit({ type: 'human_decided', run_id: runId, step_id: step.id, decision: decision.decision });
              const ok = decision.decision === 'approve';
              emit(ok
                ? { type: 'step_succeeded', run_id: runId, step_id: step.id, model: null, usage: null, duration_ms: 5, cached: false }
                : { type: 'step_failed', run_id: runId, step_id: step.id, error: 'rejected' });
              record.steps.push(this.stepRecord(step.id, step.kind, ok ? 'succeeded' : 'failed', null, ok ? 'approved' : null, null, stepStart, attempts));
              if (ok) finished.add(step.id);
              else failedSteps.add(step.id);
              return;
            }
            if (step.body) {
              await runBody(step.id, step);
              finished.add(step.id);
              return;
            }
            if (await simulate(step.id, step)) finished.add(step.id);
          }),
        );
        // A failed step is not run again; the steps that need it never become ready.
        remaining = remaining.filter((s) => !finished.has(s.id) && !failedSteps.has(s.id));
      }
      const status = cancelled ? 'cancelled' : remaining.length || failedSteps.size ? 'failed' : 'succeeded';
      record.status = status;
      record.finished_at = new Date().toISOString();
      emit({ type: 'run_finished', run_id: runId, status, duration_ms: Date.now() - started });
    })();
    /** A map's items or a loop's iterations, each running the body (nested bodies too) under its path. */
    async function runBody(path: string, step: StepData): Promise<void> {
      const stepStart = new Date().toISOString();
      emit({ type: 'step_started', run_id: runId, step_id: path, attempt: 1, model: null });
      const n = bodyRuns(step);
      for (let i = 0; i < n && !cancelled; i++) {
        for (const b of step.body ?? []) {
          if (b.body) await runBody(`${path}[${i}].${b.id}`, b);
          else await simulate(`${path}[${i}].${b.id}`, b);
        }
        if (step.kind === 'map') emit({ type: 'map_progress', run_id: runId, step_id: path, done: i + 1, failed: 0, total: n });
      }
      record.steps.push(self.stepRecord(path, step.kind, 'succeeded', null, `${n} ${step.kind === 'map' ? 'items' : 'iterations'}`, null, stepStart, []));
      emit({ type: 'step_succeeded', run_id: runId, step_id: path, model: null, usage: null, duration_ms: 5, cached: false });
    }
    /** One model-like step under its recorded path (a body's step once per item); true when it succeeded. */
    async function simulate(path: string, step: StepData): Promise<boolean> {
            const stepStart = new Date().toISOString();
            const attempts: StepRecord['attempts'] = [];
            // A step with a retry policy fails its first attempt once (to show retries).
            const flaky = step.fields.retry !== undefined;
            for (let attempt = 1; attempt <= (flaky ? 2 : 1); attempt++) {
              emit({ type: 'step_started', run_id: runId, step_id: path, attempt, model });
              // A step with `think: true` streams its reasoning first, apart from the answer.
              let reasoning = '';
              if (step.fields.think === true) {
                for (const t of ['Thinking', ' it over']) {
                  await sleep(60);
                  if (cancelled) break;
                  reasoning += t;
                  emit({ type: 'reasoning', run_id: runId, step_id: path, text: t });
                }
              }
              let out = '';
              for (const t of ['Hello', ' from', ` ${path}`]) {
                await sleep(60);
                if (cancelled) break;
                out += t;
                emit({ type: 'token', run_id: runId, step_id: path, text: t });
              }
              if (cancelled) {
                emit({ type: 'step_skipped', run_id: runId, step_id: path, reason: 'cancelled', status: 'cancelled' });
                return false;
              }
              if (flaky && attempt === 1) {
                attempts.push({ attempt, model, started_at: stepStart, duration_ms: 180, first_token_ms: 60, error_kind: 'transient', error_message: 'HTTP 503: overloaded', usage: null });
                emit({ type: 'attempt_failed', run_id: runId, step_id: path, attempt, model, error_kind: 'transient', message: 'HTTP 503: overloaded', retry_in_ms: 100 });
                continue;
              }
              const usage = { prompt_tokens: 12, completion_tokens: 3 };
              attempts.push({ attempt, model, started_at: stepStart, duration_ms: 180, first_token_ms: 60, error_kind: null, error_message: null, usage });
              record.steps.push({
                ...self.stepRecord(path, step.kind, 'succeeded', String(step.fields.prompt ?? step.fields.template ?? ''), out, model, stepStart, attempts, usage),
                ...(reasoning ? { reasoning } : {}),
                ...(step.kind === 'agent' ? { transcript: agentTranscript(step, model) } : {}),
              });
              emit({ type: 'step_succeeded', run_id: runId, step_id: path, model, usage, duration_ms: 180 * attempt, cached: false });
              return true;
            }
            return false;
    }
    return { runId, cancel: () => { cancelled = true; }, done };
  }

  private stepRecord(
    id: string,
    kind: string,
    status: 'succeeded' | 'failed',
    input: string | null,
    output: string | null,
    model: string | null,
    startedAt: string,
    attempts: StepRecord['attempts'],
    usage: StepRecord['usage'] = null,
  ): StepRecord {
    return {
      step_id: id,
      kind,
      status,
      input,
      output,
      output_json: null,
      // Only agent steps have a transcript (their model and tool calls); the test backend runs none.
      transcript: [],
      model,
      model_reason: model ? 'explicit preference (first reachable of the step\'s list)' : null,
      usage,
      started_at: startedAt,
      duration_ms: attempts.reduce((n, a) => n + a.duration_ms, 0),
      error: status === 'failed' ? 'rejected' : null,
      attempts,
      fallbacks: [],
      cached: false,
      cost_usd: 0,
      selection: null,
      guardrails: [],
      handled: false,
    };
  }

  /** No engine here, so no trigger is armed. */
  async listTriggers(): Promise<TriggerView[]> {
    return [];
  }

  async serviceStatus(): Promise<ServiceStatus | null> {
    return null;
  }

  async installService(): Promise<ServiceStatus> {
    throw new Error('the test backend has no login service');
  }

  async uninstallService(): Promise<ServiceStatus> {
    throw new Error('the test backend has no login service');
  }

  /** The saved file's `mcp` tool answers `TEST_MCP_FUNCTIONS`; a server whose command or URL says `fail` cannot be reached. */
  async discoverTools(workflow: string, tool: string): Promise<ToolFunction[]> {
    const text = this.files.get(workflow);
    if (text === undefined) throw new Error(`${workflow}: no such file in the workflows folder (save the workflow first)`);
    const tools = (parseWorkflow(text).settings.tools ?? {}) as Record<string, Record<string, unknown>>;
    const decl = tools[tool];
    if (!decl) throw new Error(`${workflow} declares no tool \`${tool}\` (save the workflow first)`);
    const mcp = decl.mcp as { command?: string[]; url?: string } | undefined;
    if (!mcp) throw new Error(`tool \`${tool}\` is not an mcp tool`);
    if (JSON.stringify(mcp).includes('fail')) throw new Error(`tool \`${tool}\`: the MCP server closed the connection before it listed its tools`);
    await new Promise((r) => setTimeout(r, 50));
    return structuredClone(TEST_MCP_FUNCTIONS);
  }
}
