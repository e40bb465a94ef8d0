import { expect, test, type Page } from '@playwright/test';

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
  await page.getByTestId('open-workflows/feature-spec.yaml').click();
  const original = await page.evaluate(() => window.nexus!.backend.files.get('workflows/feature-spec.yaml'));
  await page.getByTestId('save').click();
  await expect(page.getByTestId('toast')).toContainText('Saved workflows/feature-spec.yaml');
  const saved = await page.evaluate(() => window.nexus!.backend.files.get('workflows/feature-spec.yaml'));
  expect(saved).toBe(original);

  // Edited: add a step, connect it, save as a new file, reopen.
  await page.getByTestId('palette-template').dragTo(page.getByTestId('canvas'), {
    targetPosition: { x: 120, y: 120 },
  });
  await page.getByTestId('node-template_1').click();
  await page.getByTestId('field-template').fill('{{ inputs.feature }} done');
  page.once('dialog', (d) => d.accept('workflows/edited.yaml'));
  await page.getByTestId('save-as').click();
  await expect(page.getByTestId('toast')).toContainText('Saved workflows/edited.yaml');
  const text = await page.evaluate(() => window.nexus!.backend.files.get('workflows/edited.yaml'));
  expect(text).toContain('id: template_1');
  expect(text).toMatch(/position: \{ x: -?\d+, y: -?\d+ \}/);
  expect(text).toContain('# '); // the original file's comments survive the edit
  const positions = await page.evaluate(() =>
    window.nexus!.editor.getState().nodes.map((n) => [n.id, Math.round(n.position.x), Math.round(n.position.y)]),
  );

  await page.getByTestId('open').click();
  await page.getByTestId('open-workflows/feature-spec.yaml').click();
  await page.getByTestId('open').click();
  await page.getByTestId('open-workflows/edited.yaml').click();
  await expect(page.getByTestId('node-template_1')).toBeVisible();
  const reopened = await page.evaluate(() =>
    window.nexus!.editor.getState().nodes.map((n) => [n.id, Math.round(n.position.x), Math.round(n.position.y)]),
  );
  expect(reopened).toEqual(positions);
});

test('a run shows each node status and the streamed tokens', async ({ page }) => {
  await page.getByTestId('run').click();
  await expect(page.getByTestId('run-dialog')).toBeVisible();
  await page.getByTestId('run-start').click();
  const ids = await page.evaluate(() => window.nexus!.editor.getState().nodes.map((n) => n.id));
  expect(ids.length).toBeGreaterThan(1);
  // A node is seen running with tokens streaming in, then every node succeeds.
  await expect(page.getByTestId(`tokens-${ids[0]}`)).toContainText('Hello');
  for (const id of ids) {
    await expect(page.getByTestId(`status-${id}`)).toHaveText('succeeded', { timeout: 15_000 });
  }
  await expect(page.getByTestId('run-status')).toHaveText('succeeded');
  await expect(page.getByTestId(`run-output-${ids[0]}`)).toContainText(`Hello from ${ids[0]}`);
});
