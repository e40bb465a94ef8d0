import AxeBuilder from '@axe-core/playwright';
import { expect, test, type APIRequestContext, type Page } from '@playwright/test';

// The editor as a web app on the real engine: every page here was loaded from
// `nexus serve` (playwright.serve.config.ts), so runs, history and questions go through
// its HTTP API to the engine and the embedded model. Expectations are what the engine
// reports (stored records read back over the API), never fixed numbers.

interface Stored {
  run_id: string;
  status: string;
  steps: {
    step_id: string;
    input: string | null;
    output: string | null;
    model: string | null;
    model_reason: string | null;
    usage: { prompt_tokens: number; completion_tokens: number } | null;
    attempts: unknown[];
  }[];
  events: { type: string; step_id?: string }[];
}

async function latestRun(request: APIRequestContext): Promise<Stored> {
  const runs = (await (await request.get('/api/runs?limit=1')).json()) as { run_id: string }[];
  return (await (await request.get(`/api/runs/${runs[0].run_id}`)).json()) as Stored;
}

async function open(page: Page, name: string) {
  await page.getByTestId('open').click();
  await page.getByTestId(`open-${name}`).click();
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
  // Every node in view (the canvas draws only what is visible).
  await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
}

/** Selects step `id` (with every node brought into view first). */
async function select(page: Page, id: string) {
  await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
  await page.getByTestId(`node-${id}`).click();
}

/** Starts the run, waits for it to succeed, and returns its id as the run panel names it
 * (the run this page ran, which under load need not be the newest in the database). */
async function runToEnd(page: Page): Promise<string> {
  await page.getByTestId('run-start').click();
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 90_000 });
  return (await page.getByTestId('run-id').textContent())!.trim();
}

test.beforeEach(async ({ page }) => {
  await page.goto('/');
  await page.getByTestId('canvas').waitFor();
  // The page loads the first example workflow once the server lists them; a test that
  // loads its own before that would be overwritten by it.
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
});

test('the page talks to nexus serve: the open dialog lists the server folder', async ({ page, request }) => {
  const listed = (await (await request.get('/api/workflows')).json()) as string[];
  expect(listed).toEqual(['agent.yaml', 'approve.yaml', 'chain.yaml', 'edit.yaml', 'event.yaml', 'fanout.yaml', 'hooked.yaml', 'stream.yaml']);
  await page.getByTestId('open').click();
  for (const name of listed) await expect(page.getByTestId(`open-${name}`)).toBeVisible();
});

test('an opened workflow is edited and saved to the server; an unchanged save is byte-identical', async ({ page, request }) => {
  const before = ((await (await request.get('/api/workflows/edit.yaml')).json()) as { text: string }).text;
  await open(page, 'edit.yaml');
  await page.getByTestId('save').click();
  await expect(page.getByTestId('toast')).toContainText('Saved edit.yaml');
  const same = ((await (await request.get('/api/workflows/edit.yaml')).json()) as { text: string }).text;
  expect(same).toBe(before);
  await select(page, 'draft');
  await page.getByTestId('field-template').fill('shipped from the browser');
  // The edit has reached the graph (the node shows it) before it is saved.
  await expect(page.getByTestId('node-draft')).toContainText('shipped from the browser');
  await page.getByTestId('save').click();
  await expect(page.getByTestId('toast')).toContainText('Saved edit.yaml');
  // The first save's message is still up: wait for the second save to reach the server.
  const read = async () => ((await (await request.get('/api/workflows/edit.yaml')).json()) as { text: string }).text;
  await expect.poll(read).toContain('template: shipped from the browser');
  const after = await read();
  expect(after).toContain('# Edited and saved by the tests.');
  const check = (await (await request.post('/api/validate', { data: { text: after } })).json()) as { valid: boolean };
  expect(check.valid).toBe(true);
});

test('a run streams the embedded model tokens into the node and the panel shows the stored output', async ({ page, request }) => {
  await open(page, 'stream.yaml');
  await page.getByTestId('run').click();
  await expect(page.getByTestId('run-dialog')).toBeVisible();
  await page.getByTestId('run-start').click();
  // Tokens are seen while the step runs (the run panel row shows them as they come).
  await expect(page.getByTestId('tokens-hello')).toHaveText(/\S/, { timeout: 90_000 });
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 90_000 });
  const run = await latestRun(request);
  expect(run.status).toBe('succeeded');
  const hello = run.steps.find((s) => s.step_id === 'hello')!;
  expect(hello.model).toBe('embedded:smollm2-135m-instruct');
  await expect(page.getByTestId('run-output-hello')).toContainText(hello.output!.trim().slice(0, 20));
  await page.getByTestId('run-row-hello').click();
  await expect(page.getByTestId('detail-model')).toHaveText('embedded:smollm2-135m-instruct');
});

test('the run panel shows the stored input, output, model and why, tokens, attempts and one timeline bar per attempt', async ({ page, request }) => {
  await open(page, 'chain.yaml');
  await page.getByTestId('run').click();
  await runToEnd(page);
  const run = await latestRun(request);
  for (const step of run.steps) {
    await page.getByTestId(`run-row-${step.step_id}`).click();
    await expect(page.getByTestId('detail-input')).toHaveText(step.input!);
    await expect(page.getByTestId('detail-output')).toHaveText(step.output!);
    await expect(page.getByTestId('detail-model')).toHaveText(step.model!);
    await expect(page.getByTestId('detail-why')).toContainText(step.model_reason!);
    await expect(page.getByTestId('detail-tokens')).toContainText(
      `${step.usage!.prompt_tokens} in, ${step.usage!.completion_tokens} out`,
    );
    await expect(page.getByTestId('detail-attempts').locator('li')).toHaveCount(step.attempts.length);
    await expect(page.getByTestId(`gantt-bar-${step.step_id}-1`)).toHaveAttribute('data-outcome', 'succeeded');
  }
  // The steps ran one after the other: each bar starts after the one before it.
  const x = async (id: string) => Number(await page.getByTestId(`gantt-bar-${id}-1`).getAttribute('x'));
  expect(await x('second')).toBeGreaterThan(await x('first'));
  expect(await x('third')).toBeGreaterThan(await x('second'));
});

test('the history lists the server runs and opens one on the canvas', async ({ page, request }) => {
  await open(page, 'stream.yaml');
  await page.getByTestId('run').click();
  await runToEnd(page);
  const run = await latestRun(request);
  await open(page, 'approve.yaml');
  await expect(page.getByTestId('node-hello')).toHaveCount(0);
  await page.getByTestId('history').click();
  const rows = page.getByTestId('history-dialog').locator('tr', { hasText: 'stream' });
  await expect(rows.first()).toBeVisible();
  await rows.first().click();
  await expect(page.getByTestId('run-panel')).toContainText('from the history');
  await expect(page.getByTestId('run-id')).toHaveText(run.run_id);
  await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
  await expect(page.getByTestId('status-hello')).toHaveText('succeeded');
});

test('the history says which trigger started each run and keeps only the runs one started', async ({ page, request }) => {
  const hook = await request.post('/hooks/hooked', { data: { who: 'the test' } });
  expect(hook.status()).toBe(202);
  const { run_id: hooked } = (await hook.json()) as { run_id: string };
  await open(page, 'stream.yaml');
  await page.getByTestId('run').click();
  const byPerson = await runToEnd(page);
  await page.getByTestId('history').click();
  await expect(page.getByTestId(`history-by-${hooked}`)).toHaveText('webhook');
  await expect(page.getByTestId(`history-by-${byPerson}`)).toHaveText('person');
  await page.getByTestId('history-started-by').click();
  await page.getByRole('option', { name: 'webhook' }).click();
  await expect(page.getByTestId(`history-row-${hooked}`)).toBeVisible();
  await expect(page.getByTestId(`history-row-${byPerson}`)).toHaveCount(0);
  // The server keeps the same runs for the same trigger.
  const listed = (await (await request.get('/api/runs?trigger=webhook')).json()) as { run_id: string }[];
  expect(listed.map((r) => r.run_id)).toContain(hooked);
  expect(listed.map((r) => r.run_id)).not.toContain(byPerson);
});

test('an event step shows what it waits for until the event is posted to its run', async ({ page, request }) => {
  await open(page, 'event.yaml');
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  await expect(page.getByTestId('status-paid')).toHaveText('waiting', { timeout: 30_000 });
  await expect(page.getByTestId('run-step-waiting-paid')).toContainText('event payment until');
  const runId = (await page.getByTestId('run-id').textContent())!.trim();
  const posted = await request.post(`/api/runs/${runId}/events/payment`, { data: { amount: 5 } });
  expect(posted.status()).toBe(202);
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 30_000 });
  const stored = (await (await request.get(`/api/runs/${runId}`)).json()) as Stored;
  expect(stored.steps.find((s) => s.step_id === 'done')?.output).toBe('paid 5');
});

test('the triggers dialog lists the triggers the server armed', async ({ page, request }) => {
  const listed = (await (await request.get('/api/triggers')).json()) as { file: string; name: string | null; armed: boolean; detail: string }[];
  const hook = listed.find((t) => t.file === 'hooked.yaml');
  expect(hook?.armed).toBe(true);
  await page.getByTestId('triggers').click();
  const row = page.getByTestId(`trigger-hooked.yaml-${hook!.name ?? 'file'}`);
  await expect(row).toContainText(hook!.detail);
  await expect(row.getByTestId('trigger-state')).toHaveText('armed');
  // A browser does not manage a login service: the server it talks to is one.
  await expect(page.getByTestId('service')).toHaveCount(0);
});

test('run from a step reuses the steps before it; run up to a step runs only what it needs', async ({ page, request }) => {
  await open(page, 'chain.yaml');
  await page.getByTestId('run').click();
  await runToEnd(page);
  const started = async () =>
    (await latestRun(request)).events.filter((e) => e.type === 'step_started').map((e) => e.step_id);
  expect(await started()).toEqual(['first', 'second', 'third']);
  await select(page, 'third');
  await page.getByTestId('run-from').click();
  await expect(page.getByTestId('run-dialog')).toContainText('Run from third');
  await runToEnd(page);
  expect(await started()).toEqual(['third']);
  await select(page, 'second');
  await page.getByTestId('run-until').click();
  await runToEnd(page);
  expect(await started()).toEqual(['first', 'second']);
});

test('an approval asks in the run panel and the run goes on when it is approved', async ({ page, request }) => {
  await open(page, 'approve.yaml');
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  await expect(page.getByTestId('run-question')).toContainText('Release v1?', { timeout: 30_000 });
  // Listed once the engine waits (just after the event the panel shows).
  await expect
    .poll(async () =>
      ((await (await request.get('/api/questions')).json()) as { request: { step_id: string } }[]).map(
        (q) => q.request.step_id,
      ),
    )
    .toEqual(['ok']);
  await page.getByTestId('answer-approve').click();
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 30_000 });
  await expect(page.getByTestId('run-question')).toHaveCount(0);
  const run = await latestRun(request);
  expect(run.steps.map((s) => s.step_id)).toEqual(['draft', 'ok', 'done']);
  expect(run.events.some((e) => e.type === 'human_decided')).toBe(true);
  expect(((await (await request.get('/api/questions')).json()) as unknown[]).length).toBe(0);
});

test('a map shows its items\' progress on its node, as the engine stored them', async ({ page, request }) => {
  await open(page, 'fanout.yaml');
  await page.getByTestId('run').click();
  await runToEnd(page);
  await expect(page.getByTestId('progress-each')).toHaveText('3/3 done');
  const stored = await latestRun(request);
  const items = stored.steps.filter((s) => s.step_id.startsWith('each['));
  expect(items.map((s) => s.step_id).sort()).toEqual(['each[0].say', 'each[1].say', 'each[2].say']);
  const progress = stored.events.filter((e) => e.type === 'map_progress');
  expect(progress).toHaveLength(3);
});

test('an item of a finished map run opens with its steps as the engine stored them', async ({ page, request }) => {
  await open(page, 'fanout.yaml');
  await page.getByTestId('run').click();
  const runId = await runToEnd(page);
  const stored = (await (await request.get(`/api/runs/${runId}`)).json()) as Stored;
  await expect(page.getByTestId('run-items-each')).toContainText('3 items');
  await page.getByTestId('run-item-each').click();
  await page.getByTestId('run-item-each-option-1').click();
  const say = stored.steps.find((s) => s.step_id === 'each[1].say')!;
  await page.getByTestId('run-row-each[1].say').click();
  await expect(page.getByTestId('step-detail')).toContainText('each[1].say');
  await expect(page.getByTestId('detail-input')).toHaveText(say.input!);
  await expect(page.getByTestId('detail-output')).toHaveText(say.output!);
  await expect(page.getByTestId('detail-model')).toHaveText(say.model!);
  await expect(page.getByTestId('detail-attempts').locator('li')).toHaveCount(say.attempts.length);
  // The group on the canvas shows the same item: its body's node has that item's output.
  await expect(page.getByTestId('group-item-each')).toHaveText('item 1');
  await expect(page.getByTestId('status-say')).toHaveText('succeeded');
  expect(say.input).toContain('coffee');
});

test('an agent step\'s transcript from the engine shows in the run panel', async ({ page, request }) => {
  await open(page, 'agent.yaml');
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  // The small embedded model may not finish within two model calls: the transcript is kept either way.
  await expect(page.getByTestId('run-status')).toHaveText(/succeeded|failed/, { timeout: 90_000 });
  const runId = (await page.getByTestId('run-id').textContent())!.trim();
  const stored = (await (await request.get(`/api/runs/${runId}`)).json()) as { steps: { step_id: string; transcript: { type: string; model?: string; name?: string }[] }[] };
  const transcript = stored.steps.find((s) => s.step_id === 'helper')!.transcript;
  expect(transcript.length).toBeGreaterThan(0);
  await page.getByTestId('run-row-helper').click();
  await expect(page.getByTestId('transcript').locator('> li')).toHaveCount(transcript.length);
  const first = transcript[0];
  expect(first.type).toBe('model');
  await expect(page.getByTestId('transcript-model-0-model')).toHaveText(first.model!);
  const tool = transcript.findIndex((e) => e.type === 'tool');
  if (tool >= 0) await expect(page.getByTestId(`transcript-tool-${tool}-name`)).toHaveText(transcript[tool].name!);
});

test('discovering an mcp tool\'s functions through the server says clearly why it failed', async ({ page, request }) => {
  // A server program that does not exist: discovery cannot list its tools.
  const text = `id: mcp_probe
tools:
  ghost: {mcp: {command: [nexus-no-such-mcp-server]}}
steps:
  - {id: note, kind: template, template: hi, position: {x: 100, y: 60}}
`;
  expect((await request.put('/api/workflows/mcp-probe.yaml', { data: { text } })).ok()).toBe(true);
  await open(page, 'mcp-probe.yaml');
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.getByTestId('wf-section-toggle-tools').click();
  await page.getByTestId('tool-discover-ghost').click();
  await expect(page.getByTestId('tool-discover-error-ghost')).toContainText('Discovery failed:', { timeout: 30_000 });
  await expect(page.getByTestId('tool-functions-ghost')).toHaveCount(0);
});

test('the run diff shows what changed between two runs of a workflow on the real engine', async ({ page, request }) => {
  const text = (template: string) => `id: diffed
steps:
  - id: note
    kind: template
    template: "${template}"
    position: {x: 100, y: 60}
  - id: say
    kind: llm
    needs: [note]
    model: [embedded:smollm2-135m-instruct]
    max_tokens: 8
    cache: false
    prompt: "Repeat: {{ steps.note.output }}"
    position: {x: 100, y: 240}
`;
  const ids: string[] = [];
  for (const t of ['release one on Monday', 'release two on Monday']) {
    await page.evaluate(async (w) => {
      await window.nexus!.editor.getState().load(null, w);
    }, text(t));
    await page.getByTestId('run').click();
    ids.push(await runToEnd(page));
  }
  expect(new Set(ids).size).toBe(2);
  const [before, after] = await Promise.all(ids.map(async (id) => (await (await request.get(`/api/runs/${id}`)).json()) as Stored));
  await page.getByTestId('history').click();
  await page.getByTestId(`history-pick-${ids[0]}`).click();
  await expect(page.getByTestId(`history-pick-${ids[0]}`)).toBeChecked();
  await page.getByTestId(`history-pick-${ids[1]}`).click();
  await expect(page.getByTestId(`history-pick-${ids[1]}`)).toBeChecked();
  await page.getByTestId('history-compare').click();
  // The template's output changed by one word: the diff marks it removed and added.
  await expect(page.getByTestId('diff-changed-note-output')).toBeVisible();
  await expect(page.getByTestId('diff-output-note').locator('del')).toHaveText('one');
  await expect(page.getByTestId('diff-output-note').locator('ins')).toHaveText('two');
  // Model, tokens and duration as the engine stored them for each run.
  const say = (r: Stored) => r.steps.find((s) => s.step_id === 'say')!;
  await expect(page.getByTestId('diff-say-model-before')).toHaveText(say(before).model!);
  await expect(page.getByTestId('diff-say-model-after')).toHaveText(say(after).model!);
  const tokens = (r: Stored) => String(say(r).usage!.prompt_tokens + say(r).usage!.completion_tokens);
  await expect(page.getByTestId('diff-say-tokens-before')).toHaveText(tokens(before));
  await expect(page.getByTestId('diff-say-tokens-after')).toHaveText(tokens(after));
});

test('what the inspector controls write is a workflow the engine accepts', async ({ page, request }) => {
  await open(page, 'chain.yaml');
  await select(page, 'second');
  await page.getByTestId('section-toggle-reliability').click();
  await page.getByTestId('field-retry-max_attempts').fill('4');
  await page.getByTestId('field-retry-max_attempts').blur();
  await page.getByTestId('field-retry-max_interval').fill('10s');
  await page.getByTestId('field-retry-max_interval').blur();
  await page.getByTestId('field-retry-jitter').click();
  await page.getByTestId('field-timeout-first_token').fill('90s');
  await page.getByTestId('field-timeout-first_token').blur();
  await page.getByTestId('field-fallback-simplify').click();
  await page.getByTestId('field-fallback-ask_human').click();
  await page.getByTestId('field-on_failure').click();
  await page.getByTestId('field-on_failure-option-skip').click();
  await page.getByTestId('section-toggle-governance').click();
  await page.getByTestId('field-local_only').click();
  await page.getByTestId('field-budget-max_tokens').fill('500');
  await page.getByTestId('field-budget-max_tokens').blur();
  await page.getByTestId('field-task').click();
  await page.getByTestId('field-task-option-summarization').click();
  // The workflow's own settings, with no step selected.
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.getByTestId('wf-local_only').click();
  await page.getByTestId('wf-budget-max_cost_usd').fill('0.25');
  await page.getByTestId('wf-budget-max_cost_usd').blur();
  const text = await page.evaluate(() => window.nexus!.editor.getState().serialize());
  expect(text).toMatch(/^local_only: true$/m);
  expect(text).toMatch(/^budget:\s+max_cost_usd: 0\.25$/m);
  for (const part of ['max_attempts: 4', 'max_interval: 10s', 'jitter: false', 'first_token: 90s', 'simplify: false', 'ask_human: true', 'on_failure: skip', 'local_only: true', 'max_tokens: 500', 'task: summarization']) {
    expect(text).toContain(part);
  }
  const check = (await (await request.post('/api/validate', { data: { text } })).json()) as { valid: boolean; diagnostics?: unknown[] };
  expect(check).toMatchObject({ valid: true });
});

test('the main screen after a real run has no serious accessibility violations', async ({ page }) => {
  await open(page, 'stream.yaml');
  await page.getByTestId('run').click();
  await runToEnd(page);
  await select(page, 'hello');
  const axe = await new AxeBuilder({ page }).analyze();
  const bad = axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
});
