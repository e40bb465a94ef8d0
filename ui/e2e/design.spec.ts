import AxeBuilder from '@axe-core/playwright';
import { expect, test, type Page } from '@playwright/test';

// The editor's design: accessibility (axe-core), the light and dark themes (visual
// baselines in design.spec.ts-snapshots/, updated deliberately with
// `npx playwright test --update-snapshots`), nodes that explain themselves, the inspector's
// sections and controls, keyboard-only use, the run panel's tabs. Against the in-memory
// test backend (src/testBackend.ts).

const SHOWCASE = `id: showcase
name: Showcase
inputs:
  topic: {type: string, default: tides}
steps:
  - id: research
    name: Research the topic
    kind: llm
    prompt: "Find three facts about {{ inputs.topic }}."
    retry: {max_attempts: 4}
    fallback: {simplify: false}
    budget: {max_tokens: 2000}
    cache: false
    position: {x: 80, y: 40}
  - id: draft
    kind: llm
    needs: [research]
    model: [ollama:llama3.1:8b]
    prompt: "Write a paragraph from {{ steps.research.output }}"
    position: {x: 80, y: 260}
  - id: render
    kind: template
    needs: [draft]
    template: "# {{ inputs.topic }}\\n{{ steps.draft.output }}"
    position: {x: 380, y: 260}
`;

async function loadText(page: Page, text: string) {
  await page.evaluate(async (t) => {
    await window.nexus!.editor.getState().load(null, t);
  }, text);
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
}

async function serialized(page: Page): Promise<string> {
  return page.evaluate(() => window.nexus!.editor.getState().serialize());
}

test.beforeEach(async ({ page }) => {
  await page.goto('/');
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
});

for (const scheme of ['light', 'dark'] as const) {
  test(`the main screen in the ${scheme} theme matches its baseline and has no serious accessibility violations`, async ({ page }) => {
    await page.emulateMedia({ colorScheme: scheme });
    await loadText(page, SHOWCASE);
    await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
    await page.getByTestId('node-research').click();
    await expect(page.getByTestId('field-id')).toHaveValue('research');
    // The theme follows the OS setting.
    await expect(page.locator('.radix-themes').first()).toHaveClass(new RegExp(scheme));
    const axe = await new AxeBuilder({ page }).analyze();
    const bad = axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    expect(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
    await expect(page).toHaveScreenshot(`main-${scheme}.png`, { maxDiffPixelRatio: 0.002 });
  });
}

test('the open dialog has no serious accessibility violations and shows the template gallery', async ({ page }) => {
  await page.getByTestId('open').click();
  await expect(page.getByTestId('template-gallery')).toBeVisible();
  await expect(page.getByTestId('template-gallery').locator('button').first()).toContainText('steps');
  const axe = await new AxeBuilder({ page }).include('[data-testid="open-dialog"]').analyze();
  expect(axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id)).toEqual([]);
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('open-dialog')).toHaveCount(0);
});

test('a node shows its title, model, badges and labelled handles', async ({ page }) => {
  await loadText(page, SHOWCASE);
  const research = page.getByTestId('node-research');
  await expect(research).toContainText('Research the topic');
  await expect(research).toContainText('research');
  // No model named: "auto" with the selector's first pick (the test backend's order).
  await expect(page.getByTestId('model-research')).toHaveText('auto · ollama:llama3.1:8b');
  await expect(page.getByTestId('model-draft')).toHaveText('ollama:llama3.1:8b');
  await expect(page.getByTestId('badge-retry-research')).toHaveText('×4');
  await expect(page.getByTestId('badge-fallback-research')).toBeVisible();
  await expect(page.getByTestId('badge-budget-research')).toHaveText('2000 tok');
  await expect(page.getByTestId('badge-cache-research')).toHaveText('no cache');
  await expect(page.getByTestId('badges-draft')).toHaveCount(0);
  await expect(page.getByTestId('handle-in-research')).toHaveAttribute('title', /^research: needs/);
  await expect(page.getByTestId('handle-out-research')).toHaveAttribute('title', /^research: output/);
  await expect(research.locator('.handle-label')).toHaveText(['needs', 'output']);
  // A template step has no model line.
  await expect(page.getByTestId('model-render')).toHaveCount(0);
});

test('a running node shows its status, elapsed time, tokens and attempt; the run panel has its tabs', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 15_000 });
  // The step with a retry policy failed its first attempt in the test backend.
  await expect(page.getByTestId('status-research')).toHaveText('succeeded');
  await expect(page.getByTestId('attempt-research')).toHaveText('attempt 2');
  await expect(page.getByTestId('elapsed-research')).toHaveText(/^\d+\.\d s$/);
  await expect(page.getByTestId('tokcount-research')).toHaveText('15 tok');
  await expect(page.getByTestId('run-attempts-research')).toHaveText('2');
  await expect(page.getByTestId('run-tokens-draft')).toHaveText('15');
  await page.getByTestId('run-tab-timeline').click();
  await expect(page.getByTestId('timeline')).toBeVisible();
  // The critical path is the chain research → draft → render.
  for (const id of ['research', 'draft', 'render']) {
    await expect(page.getByTestId(`gantt-bar-${id}-1`)).toHaveAttribute('data-critical', 'true');
  }
  await page.getByTestId('run-tab-events').click();
  await expect(page.getByTestId('run-events').getByTestId('event-attempt_failed')).toContainText('HTTP 503');
  await expect(page.getByTestId('run-events').getByTestId('event-run_finished')).toBeVisible();
  await page.getByTestId('run-tab-outputs').click();
  await expect(page.getByTestId('outputs-draft')).toHaveText('Hello from draft');
  await page.getByTestId('run-tab-steps').click();
  await page.getByTestId('run-row-research').click();
  await expect(page.getByTestId('detail-attempts').locator('li')).toHaveCount(2);
  // The screen with a finished run, the step drawer open, is accessible too.
  const axe = await new AxeBuilder({ page }).analyze();
  const bad = axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
});

test('the inspector groups fields in sections with real controls and the schema help texts', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('node-research').click();
  for (const s of ['general', 'prompt', 'model', 'output', 'reliability', 'governance']) {
    await expect(page.getByTestId(`section-${s}`)).toBeVisible();
  }
  // Help texts come from the schema's doc comments.
  await expect(page.getByTestId('section-model')).toContainText('Sampling temperature, 0.0–2.0 (default 0.2).');
  // Reliability is collapsed, its header says what is set.
  await expect(page.getByTestId('section-toggle-reliability')).toContainText('retry, fallback');
  await page.getByTestId('section-toggle-reliability').click();
  // Retry policy: its sub-fields as a number, durations and a switch.
  await expect(page.getByTestId('field-retry-max_attempts')).toHaveValue('4');
  await page.getByTestId('field-retry-max_attempts').fill('5');
  await page.getByTestId('field-retry-max_attempts').blur();
  await page.getByTestId('field-retry-initial_interval').fill('soon');
  await page.getByTestId('field-retry-initial_interval').blur();
  await expect(page.getByTestId('field-retry-initial_interval-error')).toContainText('is not a duration');
  await page.getByTestId('field-retry-initial_interval').fill('2s');
  await page.getByTestId('field-retry-initial_interval').blur();
  await expect(page.getByTestId('field-retry-initial_interval-error')).toHaveCount(0);
  await page.getByTestId('field-retry-jitter').click();
  // Timeouts as durations.
  await page.getByTestId('field-timeout-total').fill('5m');
  await page.getByTestId('field-timeout-total').blur();
  // The fallback ladder as toggles with their explanations.
  await expect(page.getByTestId('field-fallback')).toContainText('Move down the selector\'s ranked chain (default true).');
  await expect(page.getByTestId('field-fallback-simplify')).toHaveAttribute('aria-checked', 'false');
  await page.getByTestId('field-fallback-next_model').click();
  // on_failure: a variant select.
  await page.getByTestId('field-on_failure').click();
  await page.getByTestId('field-on_failure-option-skip').click();
  await expect(page.getByTestId('section-reliability')).toContainText('The step is skipped (its dependants too)');
  const text = await serialized(page);
  expect(text).toMatch(/max_attempts: 5/);
  expect(text).toMatch(/initial_interval: 2s/);
  expect(text).toMatch(/jitter: false/);
  expect(text).toMatch(/timeout:\s+total: 5m/);
  expect(text).toMatch(/fallback:\s+simplify: false\s+next_model: false/);
  expect(text).toMatch(/on_failure: skip/);
  // The engine accepts what the controls wrote.
  const diagnostics = await page.evaluate((t) => window.nexus!.backend.validate(t), text);
  expect(diagnostics).toEqual([]);
});

test('keyboard only: add from the palette, select on the canvas, edit in the inspector', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('palette-template').focus();
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('node-template_1')).toBeVisible();
  await expect(page.getByTestId('field-id')).toHaveValue('template_1');
  // Canvas nodes take the focus and Enter selects the focused one.
  await page.getByTestId('node-draft').locator('xpath=..').focus();
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('field-id')).toHaveValue('draft');
  await page.getByTestId('field-prompt').focus();
  await page.keyboard.press('Control+End');
  await page.keyboard.type(' today');
  expect(await serialized(page)).toContain('{{ steps.research.output }} today');
  // The shortcut sheet opens with ? and closes with Escape.
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('?');
  await expect(page.getByTestId('shortcuts-dialog')).toContainText('Add a step or find one');
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('shortcuts-dialog')).toHaveCount(0);
});

test('the minimap sits beside the canvas and never covers a node', async ({ page }) => {
  await loadText(page, SHOWCASE);
  const canvas = (await page.getByTestId('canvas').boundingBox())!;
  const minimap = (await page.getByTestId('minimap-dock').boundingBox())!;
  expect(minimap.x + minimap.width).toBeLessThanOrEqual(canvas.x);
});

test('an empty workflow says what to do; the title marks unsaved changes', async ({ page }) => {
  await page.evaluate(async () => {
    await window.nexus!.editor.getState().load(null, 'id: blank\nsteps: []\n');
  });
  await expect(page.getByTestId('empty-state')).toContainText('Drag a step from the palette');
  await expect(page.getByTestId('unsaved')).toHaveCount(0);
  await page.getByTestId('palette-llm').focus();
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('empty-state')).toHaveCount(0);
  await expect(page.getByTestId('unsaved')).toBeVisible();
});

test('two runs of a workflow compare step by step in the history', async ({ page }) => {
  await loadText(page, SHOWCASE);
  const runOnce = async () => {
    await page.getByTestId('run').click();
    await page.getByTestId('run-start').click();
    await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 15_000 });
  };
  await runOnce();
  // Without its retry policy the test backend's `research` succeeds at the first attempt.
  await page.getByTestId('node-research').click();
  await page.evaluate(() => window.nexus!.editor.getState().updateField('research', 'retry', undefined));
  await runOnce();
  await page.getByTestId('history').click();
  const rows = page.getByTestId('history-dialog').locator('tbody tr', { hasText: 'showcase' });
  await expect(rows).toHaveCount(2);
  await expect(page.getByTestId('history-compare')).toBeDisabled();
  await rows.nth(0).getByRole('checkbox').click();
  await rows.nth(1).getByRole('checkbox').click();
  await page.getByTestId('history-compare').click();
  await expect(page.getByTestId('run-diff-summary')).toContainText('1 of 3 steps changed');
  await expect(page.getByTestId('diff-changed-research-attempts')).toBeVisible();
  await expect(page.getByTestId('diff-research-attempts-before')).toHaveText('2');
  await expect(page.getByTestId('diff-research-attempts-after')).toHaveText('1');
  await expect(page.getByTestId('diff-unchanged-draft')).toBeVisible();
  await expect(page.getByTestId('diff-output-draft')).toHaveText('Hello from draft');
  await expect(page.getByTestId('diff-output-draft').locator('ins, del')).toHaveCount(0);
  const axe = await new AxeBuilder({ page }).include('[data-testid="history-dialog"]').analyze();
  const bad = axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(bad.map((v) => `${v.id}: ${v.nodes.map((n) => `${n.target.join(' ')} ${n.failureSummary}`).join(', ')}`)).toEqual([]);
});

test('the prompt editor highlights minijinja and shows the validator errors as squiggles', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('node-draft').click();
  const prompt = page.getByTestId('field-prompt');
  // Highlighted: the braces and the variable are separate tokens.
  await expect(prompt.locator('span', { hasText: '{{' }).first()).toBeVisible();
  await prompt.fill('Write from {{ steps.nowhere.output }}');
  await expect(page.getByTestId('field-error-prompt')).toBeVisible();
  // The squiggle is under the unknown name, with the validator's message.
  const squiggle = page.getByTestId('field-prompt-editor').locator('.cm-lintRange-error');
  await expect(squiggle.first()).toBeVisible();
  await expect(page.getByTestId('field-prompt-editor')).toContainText('Write from {{ steps.nowhere.output }}');
  await prompt.fill('Write from {{ steps.research.output }}');
  await expect(page.getByTestId('field-error-prompt')).toHaveCount(0);
  await expect(squiggle).toHaveCount(0);
});

test('the YAML view is kept in sync with the canvas both ways and locates syntax errors', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('yaml-toggle').click();
  const yamlText = page.getByTestId('yaml-text');
  await expect(yamlText).toContainText('name: Research the topic');
  // Canvas/inspector → text.
  await page.getByTestId('node-render').click();
  await page.getByTestId('field-template').fill('Final: {{ steps.draft.output }}');
  await expect(yamlText).toContainText('Final: {{ steps.draft.output }}');
  // Text → canvas: a renamed display name and a new step appear on the canvas.
  const edited = SHOWCASE.replace('name: Research the topic', 'name: Dig into the topic') +
    '  - id: extra\n    kind: template\n    needs: [render]\n    template: more\n    position: {x: 380, y: 480}\n';
  await yamlText.fill(edited);
  await expect(page.getByTestId('node-research')).toContainText('Dig into the topic');
  await expect(page.getByTestId('node-extra')).toBeVisible();
  await expect(page.getByTestId('canvas').locator('.react-flow__edge')).toHaveCount(3);
  expect(await serialized(page)).toContain('id: extra');
  // A syntax error is located in the text and leaves the canvas as it was.
  await yamlText.fill(edited.replace('template: more', 'template: "more'));
  await expect(page.getByTestId('yaml-status')).toContainText(/line \d+/);
  await expect(page.getByTestId('yaml-view').locator('.cm-lintRange-error').first()).toBeVisible();
  await expect(page.getByTestId('node-extra')).toBeVisible();
  // Undo takes back the text edit like any other edit.
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.getByTestId('undo').click();
  await expect(page.getByTestId('node-extra')).toHaveCount(0);
});

test('output_schema is edited as YAML with a preview of the object the step returns', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('node-draft').click();
  const editor = page.getByTestId('field-output_schema');
  await editor.fill('type: object\nrequired: [title]\nproperties:\n  title: {type: string, description: The headline}\n  tags:\n    type: array\n    items: {type: string}\n');
  await page.getByTestId('field-id').click();
  await expect(page.getByTestId('field-output_schema-preview-title')).toContainText('title string required — The headline');
  await expect(page.getByTestId('field-output_schema-preview-tags')).toContainText('tags array');
  expect(await serialized(page)).toMatch(/output_schema:\s+type: object\s+required:\s+- title/);
  // Text that is not YAML is refused with the reason and leaves the schema as it was.
  await editor.fill('type: [object');
  await page.getByTestId('field-id').click();
  await expect(page.getByTestId('field-output_schema-error')).toContainText('not valid YAML');
  expect(await serialized(page)).toContain('description: The headline');
});

test('every kind in the schema is in the palette and opens in the inspector with its sections', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.evaluate(async () => {
    await window.nexus!.editor.getState().load(null, 'id: kinds\nsteps: []\n');
  });
  const kinds = await page.getByTestId('palette').locator('[data-testid^="palette-"]').evaluateAll((els) =>
    els.map((e) => e.getAttribute('data-testid')!.replace('palette-', '')),
  );
  expect(kinds).toEqual(expect.arrayContaining(['llm', 'template', 'approval']));
  for (const kind of kinds) {
    await page.getByTestId(`palette-${kind}`).focus();
    await page.keyboard.press('Enter');
    await expect(page.getByTestId('field-id')).toHaveValue(`${kind}_1`);
    await expect(page.getByTestId('section-general')).toBeVisible();
    await expect(page.getByTestId(`node-${kind}_1`)).toBeVisible();
  }
  expect(errors).toEqual([]);
});

test('local only is a switch in Governance that keeps the chosen model', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('node-draft').click();
  await page.getByTestId('section-toggle-governance').click();
  await expect(page.getByTestId('section-governance')).toContainText('only Ollama and the embedded model are candidates');
  await page.getByTestId('field-local_only').click();
  expect(await serialized(page)).toMatch(/model:\s+prefer:\s+- ollama:llama3\.1:8b\s+local_only: true/);
  await expect(page.getByTestId('badge-local-draft')).toHaveText('local only');
  await expect(page.getByTestId('model-picker')).toContainText('ollama:llama3.1:8b');
  await page.getByTestId('field-local_only').click();
  expect(await serialized(page)).toContain('model: [ ollama:llama3.1:8b ]');
  await expect(page.getByTestId('badge-local-draft')).toHaveCount(0);
});

test('a failed step shows its error on the node and in the inspector', async ({ page }) => {
  await loadText(page, `id: gate
steps:
  - id: ask
    kind: approval
    prompt: Ship it?
    position: {x: 100, y: 60}
`);
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  await page.getByTestId('answer-reject').click();
  await expect(page.getByTestId('run-status')).toHaveText('failed', { timeout: 15_000 });
  await expect(page.getByTestId('status-ask')).toHaveText('failed');
  await expect(page.getByTestId('run-error-ask')).toHaveText('rejected');
  await page.getByTestId('node-ask').click();
  await expect(page.getByTestId('inspector-output')).toContainText('rejected');
});

test('with no step selected the inspector edits the workflow settings, undo included', async ({ page }) => {
  await loadText(page, SHOWCASE);
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await expect(page.getByTestId('workflow-settings')).toContainText('Workflow settings');
  await expect(page.getByTestId('wf-name')).toHaveValue('Showcase');
  await expect(page.getByTestId('wf-section-governance')).toContainText('Privacy policy');
  await page.getByTestId('wf-name').fill('Tide facts');
  await page.getByTestId('wf-name').blur();
  await page.getByTestId('wf-local_only').click();
  const text = await serialized(page);
  expect(text).toMatch(/^name: Tide facts$/m);
  expect(text).toMatch(/^local_only: true$/m);
  await page.getByTestId('undo').click();
  expect(await serialized(page)).not.toContain('local_only: true');
});
