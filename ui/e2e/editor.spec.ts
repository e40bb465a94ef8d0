import { expect, test, type Page } from '@playwright/test';

// Editor behaviour that needs no engine, against the in-memory test backend
// (src/testBackend.ts). Runs, the run panel, the history, run from / up to a step and
// approvals are tested on the real engine in e2e-serve/ (the editor served by
// `nexus serve`).

const TWO_STEPS = `id: pair
steps:
  - id: a
    kind: template
    template: first
    position: {x: 100, y: 80}
  - id: b
    kind: template
    template: second
    position: {x: 100, y: 320}
`;

async function loadText(page: Page, text: string) {
  await page.evaluate(async (t) => {
    await window.nexus!.editor.getState().load(null, t);
  }, text);
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
}

async function dragBetween(page: Page, from: string, to: string) {
  const a = await page.getByTestId(from).boundingBox();
  const b = await page.getByTestId(to).boundingBox();
  if (!a || !b) throw new Error('handles not visible');
  await page.mouse.move(a.x + a.width / 2, a.y + a.height / 2);
  await page.mouse.down();
  await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 5 });
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2, { steps: 5 });
  await page.mouse.up();
}

test.beforeEach(async ({ page }) => {
  await page.goto('/');
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
});

test('a step dragged from the palette lands on the canvas', async ({ page }) => {
  const nodes = page.getByTestId('canvas').locator('.react-flow__node');
  const before = await nodes.count();
  await page.getByTestId('palette-llm').dragTo(page.getByTestId('canvas'), {
    targetPosition: { x: 200, y: 150 },
  });
  await expect(nodes).toHaveCount(before + 1);
  await expect(page.getByTestId('node-llm_1')).toBeVisible();
});

test('dragging between handles connects steps and a cycle is refused with its reason', async ({ page }) => {
  await loadText(page, TWO_STEPS);
  const edges = page.getByTestId('canvas').locator('.react-flow__edge');
  await expect(edges).toHaveCount(0);
  await dragBetween(page, 'handle-out-a', 'handle-in-b');
  await expect(edges).toHaveCount(1);
  await dragBetween(page, 'handle-out-b', 'handle-in-a');
  await expect(edges).toHaveCount(1);
  await expect(page.getByTestId('toast')).toContainText('would form a cycle');
  // The connection is in the file as `needs`.
  const text = await page.evaluate(() => window.nexus!.editor.getState().serialize());
  expect(text).toMatch(/id: b[\s\S]*needs: \[ a \]/);
});

test('prompt edits and deletions undo and redo', async ({ page }) => {
  await loadText(page, TWO_STEPS);
  await page.getByTestId('node-a').click();
  await page.getByTestId('field-template').fill('edited text');
  await expect(page.getByTestId('node-a')).toContainText('edited text');
  await page.getByTestId('undo').click();
  await expect(page.getByTestId('node-a')).toContainText('first');
  await page.getByTestId('redo').click();
  await expect(page.getByTestId('node-a')).toContainText('edited text');
  // A deleted step comes back with undo (keyboard shortcuts too).
  await page.getByTestId('node-b').click();
  await page.keyboard.press('Delete');
  await expect(page.getByTestId('node-b')).toHaveCount(0);
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('Control+z');
  await expect(page.getByTestId('node-b')).toBeVisible();
  await page.keyboard.press('Control+Shift+z');
  await expect(page.getByTestId('node-b')).toHaveCount(0);
});

test('saving keeps positions, reopening shows the same graph, an unchanged save is byte-identical', async ({ page }) => {
  // Unchanged: open an example and save it.
  await page.getByTestId('open').click();
  await page.getByTestId('open-feature-spec.yaml').click();
  const original = await page.evaluate(() => window.nexus!.backend.files.get('feature-spec.yaml'));
  await page.getByTestId('save').click();
  await expect(page.getByTestId('toast')).toContainText('Saved feature-spec.yaml');
  const saved = await page.evaluate(() => window.nexus!.backend.files.get('feature-spec.yaml'));
  expect(saved).toBe(original);

  // Edited: add a step, connect it, save as a new file, reopen.
  await page.getByTestId('palette-template').dragTo(page.getByTestId('canvas'), {
    targetPosition: { x: 120, y: 120 },
  });
  await page.getByTestId('node-template_1').click();
  await page.getByTestId('field-template').fill('{{ inputs.feature }} done');
  page.once('dialog', (d) => d.accept('edited.yaml'));
  await page.getByTestId('save-as').click();
  await expect(page.getByTestId('toast')).toContainText('Saved edited.yaml');
  const text = await page.evaluate(() => window.nexus!.backend.files.get('edited.yaml'));
  expect(text).toContain('id: template_1');
  expect(text).toMatch(/position: \{ x: -?\d+, y: -?\d+ \}/);
  expect(text).toContain('# '); // the original file's comments survive the edit
  const positions = await page.evaluate(() =>
    window.nexus!.editor.getState().nodes.map((n) => [n.id, Math.round(n.position.x), Math.round(n.position.y)]),
  );

  await page.getByTestId('open').click();
  await page.getByTestId('open-feature-spec.yaml').click();
  await page.getByTestId('open').click();
  await page.getByTestId('open-edited.yaml').click();
  await expect(page.getByTestId('node-template_1')).toBeVisible();
  const reopened = await page.evaluate(() =>
    window.nexus!.editor.getState().nodes.map((n) => [n.id, Math.round(n.position.x), Math.round(n.position.y)]),
  );
  expect(reopened).toEqual(positions);
});

test('the search palette adds a step and finds one', async ({ page }) => {
  await loadText(page, TWO_STEPS);
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('Control+k');
  await page.getByTestId('search-input').fill('approv');
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('node-approval_1')).toBeVisible();
  await page.keyboard.press('Control+k');
  await page.getByTestId('search-input').fill('b');
  await page.getByTestId('search-find-b').click();
  await expect(page.getByTestId('field-id')).toHaveValue('b');
});

test('the model picker lists the models in the selector order and writes the choice', async ({ page }) => {
  await loadText(page, `id: m\nsteps:\n  - id: ask\n    kind: llm\n    prompt: Hi\n    position: {x: 100, y: 100}\n`);
  await page.getByTestId('node-ask').click();
  await page.getByTestId('model-picker').click();
  const options = page.getByRole('option');
  await expect(options).toHaveCount(4);
  await expect(options.nth(1)).toContainText('1. ollama:llama3.1:8b');
  await page.getByRole('option', { name: /embedded:smollm2-135m-instruct/ }).click();
  await expect(page.getByTestId('model-picker')).toContainText('embedded:smollm2-135m-instruct');
  const text = await page.evaluate(() => window.nexus!.editor.getState().serialize());
  expect(text).toContain('model: [ embedded:smollm2-135m-instruct ]');
});

test('validation errors show on the node and the field', async ({ page }) => {
  await loadText(page, `id: v\nsteps:\n  - id: empty\n    kind: llm\n    position: {x: 100, y: 100}\n`);
  await expect(page.getByTestId('node-error-empty')).toContainText('need a `prompt`');
  await page.getByTestId('node-empty').click();
  await expect(page.getByTestId('field-error-prompt')).toBeVisible();
  await page.getByTestId('field-prompt').fill('Now it has one');
  await expect(page.getByTestId('node-error-empty')).toHaveCount(0);
});

test('a broken file opens with its error located and is not rewritten', async ({ page }) => {
  const broken = 'id: broken\nsteps:\n  - id: a\n    kind: llm\n    prompt: "unclosed\n';
  await page.evaluate((t) => window.nexus!.backend.files.set('broken.yaml', t), broken);
  await page.getByTestId('open').click();
  await page.getByTestId('open-broken.yaml').click();
  await expect(page.getByTestId('toast')).toHaveText(/^broken\.yaml:\d+:\d+: Missing closing "quote/);
  await page.getByTestId('save').click();
  const after = await page.evaluate(() => window.nexus!.backend.files.get('broken.yaml'));
  expect(after).toBe(broken);
});

const CHAIN = `id: chain
steps:
  - id: first
    kind: llm
    prompt: one
    position: {x: 100, y: 60}
  - id: second
    kind: llm
    needs: [first]
    prompt: "two {{ steps.first.output }}"
    position: {x: 100, y: 240}
  - id: third
    kind: llm
    needs: [second]
    prompt: three
    position: {x: 100, y: 420}
`;

test('a thinking step streams its reasoning apart from its output in the run panel', async ({ page }) => {
  await loadText(page, `id: thinking
steps:
  - id: plan
    kind: llm
    think: true
    prompt: Pick a colour.
    position: {x: 100, y: 60}
`);
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  // While the step thinks its reasoning streams in the row, before any answer.
  await expect(page.getByTestId('run-reasoning-plan')).toContainText('Thinking it over');
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 15_000 });
  await expect(page.getByTestId('run-output-plan')).toContainText('Hello from plan');
  await page.getByTestId('run-row-plan').click();
  await expect(page.getByTestId('detail-reasoning')).toHaveText('Thinking it over');
  await expect(page.getByTestId('detail-output')).toHaveText('Hello from plan');
});

test('the prompt editor completes inputs and upstream outputs', async ({ page }) => {
  await loadText(page, CHAIN);
  await page.getByTestId('node-third').click();
  const prompt = page.getByTestId('field-prompt');
  await prompt.click();
  await prompt.press('End');
  await prompt.pressSequentially(' {{ steps.fi');
  // CodeMirror's completion list (the prompt is a CodeMirror editor).
  const completions = page.locator('.cm-tooltip-autocomplete');
  await expect(completions).toBeVisible();
  await expect(completions.getByRole('option')).toHaveCount(1);
  await prompt.press('Enter');
  await expect(prompt).toHaveText('three {{ steps.first.output }}');
  const saved = await page.evaluate(() => window.nexus!.editor.getState().serialize());
  expect(saved).toContain('prompt: three {{ steps.first.output }}');
});

test('the models view shows Ollama, pulls with progress and keeps a key', async ({ page }) => {
  await page.getByTestId('models').click();
  await expect(page.getByTestId('ollama-status')).toContainText('running at http://127.0.0.1:11434');
  await expect(page.getByTestId('ollama-model-llama3.1:8b')).toContainText('4.9 GB');
  await expect(page.getByTestId('ollama-model-llama3.1:8b')).toContainText('131,072 tokens');
  await expect(page.getByTestId('embedded-status')).toContainText('ready');
  await page.getByTestId('pull-name').fill('qwen2.5:7b');
  await page.getByTestId('pull').click();
  await expect(page.getByTestId('pull-status')).toHaveText('success');
  await page.getByTestId('pull-name').fill('missing-model');
  await page.getByTestId('pull').click();
  await expect(page.getByTestId('models-error')).toContainText('file does not exist');
  await expect(page.getByTestId('key-openai')).toContainText('no key');
  await page.getByTestId('key-input-openai').fill('sk-abc');
  await page.getByTestId('key-save-openai').click();
  await expect(page.getByTestId('key-openai')).toContainText('key in the keychain');
  await expect(page.getByTestId('key-input-openai')).toHaveValue('');
  await page.getByTestId('key-delete-openai').click();
  await expect(page.getByTestId('key-openai')).toContainText('no key');
});

test('the workflows folder is shown and can be changed', async ({ page }) => {
  await page.getByTestId('open').click();
  await expect(page.getByTestId('folder-input')).toHaveValue('workflows');
  await expect(page.getByTestId('open-feature-spec.yaml')).toBeVisible();
  // The folder is chosen in the native dialog (the test backend answers it).
  await page.getByTestId('folder-choose').click();
  await expect(page.getByTestId('open-feature-spec.yaml')).toBeVisible();
  await page.evaluate(() => {
    window.nexus!.backend.dialogAnswer = '/home/me/flows';
  });
  await page.getByTestId('folder-choose').click();
  await expect(page.getByTestId('open-feature-spec.yaml')).toHaveCount(0);
  expect(await page.evaluate(() => window.nexus!.backend.folder)).toBe('/home/me/flows');
});
