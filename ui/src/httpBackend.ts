// The Backend of the editor served by `nexus serve` (the web app): every call is one
// request to its HTTP API (schema/openapi.json), run events arrive as Server-Sent
// Events on an EventSource. Errors come back as JSON tagged by `kind` and become
// BackendErrors, as in the desktop app. What needs the desktop (native dialogs, the OS
// keychain, pulling into Ollama) is refused with a message saying where to do it.
import {
  BackendError,
  type Backend,
  type Diagnostic,
  type EngineEvent,
  type HumanDecision,
  type ModelEntry,
  type ModelsView,
  type PendingQuestion,
  type PullProgress,
  type RunHandle,
  type RunOptions,
  type RunSummary,
  type ServiceStatus,
  type Settings,
  type StoredRun,
  type TriggerView,
  type ToolFunction,
} from './backend';

/** The answer of `GET /api/health`. */
interface Health {
  service: string;
  status: string;
  version: string;
  token_required: boolean;
}

/** True when the page was loaded from `nexus serve` (its health check answers). */
export async function servedByNexus(base = ''): Promise<boolean> {
  try {
    const r = await fetch(`${base}/api/health`, { headers: { Accept: 'application/json' } });
    if (!r.ok) return false;
    const h = (await r.json()) as Health;
    return h.service === 'nexus';
  } catch {
    return false;
  }
}

function toError(status: number, body: unknown): BackendError {
  if (body && typeof body === 'object' && 'kind' in body) {
    const e = body as { kind: string; message?: string; path?: string; reason?: string; diagnostics?: Diagnostic[] };
    const diagnostics = e.diagnostics ?? [];
    const message =
      e.message ??
      (e.reason !== undefined
        ? `${e.path}: ${e.reason}`
        : diagnostics.map((d) => `${d.span ? `${d.span.line}:${d.span.column}: ` : ''}${d.message}`).join('\n'));
    return new BackendError(e.kind, message, diagnostics);
  }
  return new BackendError('internal', `the server answered HTTP ${status}`);
}

export class HttpBackend implements Backend {
  /**
   * `base`: the server's origin ('' for the page's own); `token`: the API token of a
   * server that needs one (from the page's `#token=` fragment, never sent in a URL
   * except to the event stream, which cannot send headers).
   */
  constructor(
    private readonly base = '',
    private readonly token: string | null = null,
  ) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const r = await fetch(`${this.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 204) return undefined as T;
    const text = await r.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      throw new BackendError('internal', `the server answered HTTP ${r.status}: ${text.slice(0, 200)}`);
    }
    if (!r.ok) throw toError(r.status, parsed);
    return parsed as T;
  }

  private follow(runId: string, onEvent: (e: EngineEvent) => void): RunHandle {
    let finish: () => void = () => {};
    const done = new Promise<void>((resolve) => (finish = resolve));
    const query = this.token ? `?token=${encodeURIComponent(this.token)}` : '';
    const source = new EventSource(`${this.base}/api/runs/${encodeURIComponent(runId)}/events${query}`);
    source.onmessage = (m: MessageEvent<string>) => {
      const e = JSON.parse(m.data) as EngineEvent;
      onEvent(e);
      if (e.type === 'run_finished') {
        source.close();
        finish();
      }
    };
    // A dropped connection is retried by the EventSource itself, with `Last-Event-ID`,
    // so no event is repeated or lost.
    return {
      runId,
      cancel: () => void this.call('POST', `/api/runs/${encodeURIComponent(runId)}/cancel`).catch(() => {}),
      done,
    };
  }

  async models(): Promise<ModelEntry[]> {
    const view = await this.modelsView();
    return view.order.map((m) => ({
      reference: m.reference,
      locality: m.locality as ModelEntry['locality'],
      reason: m.reason,
      contextLength: m.context_length,
    }));
  }

  modelsView() {
    return this.call<ModelsView>('GET', '/api/models');
  }

  async pullModel(_name: string, _onProgress: (p: PullProgress) => void): Promise<void> {
    throw new BackendError('unsupported', 'pull models with `ollama pull NAME` on the server, or in the desktop app');
  }

  async setApiKey(_provider: string, _key: string): Promise<void> {
    throw new BackendError('unsupported', "set the server's cloud keys in its environment (NEXUS_OPENAI_API_KEY)");
  }

  async deleteApiKey(_provider: string): Promise<void> {
    throw new BackendError('unsupported', "remove the key from the server's environment");
  }

  settings() {
    return this.call<Settings>('GET', '/api/settings');
  }

  async chooseWorkflowsFolder(): Promise<Settings | null> {
    throw new BackendError('unsupported', 'the workflows folder of `nexus serve` is set when it starts (--workflows)');
  }

  async chooseInputFile(): Promise<string | null> {
    throw new BackendError('unsupported', 'give a path inside the workflows folder: the web app cannot open files outside it');
  }

  async useTemplate(name: string) {
    const t = await this.call<{ name: string; text: string }>('POST', `/api/templates/${encodeURIComponent(name)}/use`);
    return t.text;
  }

  listWorkflows() {
    return this.call<string[]>('GET', '/api/workflows');
  }

  templates() {
    return this.call<{ name: string; text: string }[]>('GET', '/api/templates');
  }

  async readWorkflow(path: string) {
    const w = await this.call<{ name: string; text: string }>('GET', `/api/workflows/${encodeURIComponent(path)}`);
    return w.text;
  }

  async writeWorkflow(path: string, text: string) {
    await this.call('PUT', `/api/workflows/${encodeURIComponent(path)}`, { text });
  }

  async validate(text: string) {
    const v = await this.call<{ diagnostics: Diagnostic[] }>('POST', '/api/validate', { text });
    return v.diagnostics;
  }

  async run(
    text: string,
    inputs: Record<string, string>,
    onEvent: (e: EngineEvent) => void,
    options: RunOptions = {},
  ): Promise<RunHandle> {
    const { run_id } = await this.call<{ run_id: string }>('POST', '/api/runs', {
      text,
      file: options.file ?? null,
      inputs,
      from: options.from ?? null,
      until: options.until ?? null,
      fresh: options.fresh ?? false,
    });
    return this.follow(run_id, onEvent);
  }

  async resume(runId: string, onEvent: (e: EngineEvent) => void): Promise<RunHandle> {
    const { run_id } = await this.call<{ run_id: string }>('POST', `/api/runs/${encodeURIComponent(runId)}/resume`);
    return this.follow(run_id, onEvent);
  }

  listRuns(limit: number) {
    return this.call<RunSummary[]>('GET', `/api/runs?limit=${Math.max(1, Math.min(1000, limit))}`);
  }

  getRun(runId: string) {
    return this.call<StoredRun>('GET', `/api/runs/${encodeURIComponent(runId)}`);
  }

  pendingQuestions() {
    return this.call<PendingQuestion[]>('GET', '/api/questions');
  }

  async answer(runId: string, stepId: string, decision: HumanDecision) {
    await this.call('POST', `/api/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(stepId)}/answer`, decision);
  }

  listTriggers() {
    return this.call<TriggerView[]>('GET', '/api/triggers');
  }

  /** The server is the service: a browser does not install one. */
  async serviceStatus() {
    return null;
  }

  async installService(): Promise<ServiceStatus> {
    throw new BackendError('unsupported', 'the login service is installed from the desktop app or with `nexus service install`');
  }

  async uninstallService(): Promise<ServiceStatus> {
    throw new BackendError('unsupported', 'the login service is removed from the desktop app or with `nexus service uninstall`');
  }

  async discoverTools(workflow: string, tool: string): Promise<ToolFunction[]> {
    const r = await this.call<{ functions: ToolFunction[] }>(
      'GET',
      `/api/workflows/${encodeURIComponent(workflow)}/tools/${encodeURIComponent(tool)}/functions`,
    );
    return r.functions;
  }
}
