import AxeBuilder from '@axe-core/playwright';
import { expect, test, type Page } from '@playwright/test';

// First start and several workflows: tabs (each with its own graph, unsaved marker, undo
// history and run), the empty state's template gallery, toasts, the shortcut sheet.
// Against the in-memory test backend (src/testBackend.ts).

const ASKS = `id: asks
steps:
  - id: ask
    kind: approval
    prompt: "Go on?"
    position: {x: 40, y: 40}
  - id: after
    kind: template
    needs: [ask]
    template: "went on"
    position: {x: 40, y: 240}
`;

async function openFile(page: Page, name: string) {
  await page.getByTestId('open').click();
  await page.getByTestId(`open-${name}`).click();
  await expect(page.getByTestId('open-dialog')).toHaveCount(0);
}

async function nodeIds(page: Page): Promise<string[]> {
  return page.evaluate(() => window.nexus!.editor.getState().nodes.map((n) => n.id));
}

async function noSeriousViolations(page: Page) {
  const axe = await new AxeBuilder({ page }).analyze();
  const bad = axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
}

test.beforeEach(async ({ page }) => {
  await page.goto('/');
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
});

test('several workflows open in tabs, each with its own graph, unsaved marker and undo history', async ({ page }) => {
  await expect(page.getByTestId('doc-tabs').getByRole('tab')).toHaveCount(1);
  await openFile(page, 'feature-spec.yaml');
  await openFile(page, 'issue-triage.yaml');
  const tabs = page.getByTestId('doc-tabs').getByRole('tab');
  await expect(tabs).toHaveCount(3);
  await expect(tabs.nth(1)).toHaveText('feature-spec.yaml');
  await expect(tabs.nth(2)).toHaveText('issue-triage.yaml');
  await expect(tabs.nth(2)).toHaveAttribute('aria-selected', 'true');
  const triage = await nodeIds(page);
  // The tabs not shown take no room: the canvas is as tall as with one tab.
  expect((await page.getByTestId('canvas').boundingBox())!.height).toBeGreaterThan(600);
  await expect(page.locator('[role=tabpanel]')).toHaveCount(3);
  await expect(page.getByRole('tabpanel', { includeHidden: false })).toHaveCount(1);

  // An edit in one tab marks that tab only and is undone there only.
  await tabs.nth(1).click();
  await expect(page.getByTestId('title')).toHaveText('feature-spec.yaml');
  const spec = await nodeIds(page);
  expect(spec).not.toEqual(triage);
  await page.getByTestId('palette-template').focus();
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('node-template_1')).toBeVisible();
  await expect(page.getByTestId('doc-tab-1-unsaved')).toBeVisible();
  await expect(page.getByTestId('doc-tab-2-unsaved')).toHaveCount(0);
  await tabs.nth(2).click();
  expect(await nodeIds(page)).toEqual(triage);
  await expect(page.getByTestId('unsaved')).toHaveCount(0);
  await page.getByTestId('undo').click();
  expect(await nodeIds(page)).toEqual(triage);
  // The keyboard moves between tabs (Radix Tabs: arrows on the tab strip).
  await tabs.nth(2).focus();
  await page.keyboard.press('ArrowLeft');
  await expect(tabs.nth(1)).toHaveAttribute('aria-selected', 'true');
  expect(await nodeIds(page)).toEqual([...spec, 'template_1']);
  await page.getByTestId('undo').click();
  expect(await nodeIds(page)).toEqual(spec);

  // Opening a file that is open already shows its tab.
  await openFile(page, 'issue-triage.yaml');
  await expect(tabs).toHaveCount(3);
  await expect(tabs.nth(2)).toHaveAttribute('aria-selected', 'true');
  await noSeriousViolations(page);
});

test('closing a tab with unsaved changes asks first; the last tab closed leaves an empty one', async ({ page }) => {
  await openFile(page, 'feature-spec.yaml');
  const tabs = page.getByTestId('doc-tabs').getByRole('tab');
  await page.getByTestId('palette-llm').focus();
  await page.keyboard.press('Enter');
  await page.getByTestId('tab-close').click();
  await expect(page.getByTestId('close-tab-dialog')).toContainText('unsaved changes will be lost');
  await page.getByRole('button', { name: 'Keep it open' }).click();
  await expect(tabs).toHaveCount(2);
  await expect(page.getByTestId('node-llm_1')).toBeVisible();
  await page.getByTestId('tab-close').click();
  await page.getByTestId('close-tab-confirm').click();
  await expect(tabs).toHaveCount(1);
  await expect(page.getByTestId('title')).not.toHaveText(/feature-spec/);
  // The remaining (unchanged) tab closes without asking and leaves a blank workflow.
  await page.getByTestId('tab-close').click();
  await expect(page.getByTestId('close-tab-dialog')).toHaveCount(0);
  await expect(tabs).toHaveCount(1);
  await expect(page.getByTestId('empty-state')).toBeVisible();
});

test('a new tab says what to do and offers the templates; a template opens there, unsaved', async ({ page }) => {
  await page.getByTestId('tab-new').click();
  const tabs = page.getByTestId('doc-tabs').getByRole('tab');
  await expect(tabs).toHaveCount(2);
  await expect(page.getByTestId('empty-state')).toContainText('Drag a step from the palette');
  const gallery = page.getByTestId('empty-template');
  await expect(gallery.locator('button').first()).toContainText('steps');
  await noSeriousViolations(page);
  await page.getByTestId('empty-template-issue-triage.yaml').click();
  // The blank tab is reused rather than a third one opened.
  await expect(tabs).toHaveCount(2);
  await expect(page.getByTestId('empty-state')).toHaveCount(0);
  await expect(page.getByTestId('unsaved')).toBeVisible();
  await expect(page.getByTestId('doc-tab-1-unsaved')).toBeVisible();
  // Alt+N opens another new tab from anywhere but a text field.
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.keyboard.press('Alt+N');
  await expect(tabs).toHaveCount(3);
  await expect(page.getByTestId('empty-state')).toBeVisible();
});

test('a run goes on in its own tab while another is shown', async ({ page }) => {
  await page.evaluate(async (t) => window.nexus!.editor.getState().load(null, t), ASKS);
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  await expect(page.getByTestId('run-question')).toContainText('Go on?');
  const runId = await page.evaluate(() => window.nexus!.editor.getState().run!.runId);
  await openFile(page, 'feature-spec.yaml');
  await expect(page.getByTestId('run-panel')).toHaveCount(0);
  // The run ends while its tab is not shown.
  await page.evaluate(async (id) => window.nexus!.backend.answer(id, 'ask', { decision: 'approve' }), runId);
  await page.waitForTimeout(500);
  expect(await page.evaluate(() => window.nexus!.editor.getState().run)).toBeNull();
  await page.getByTestId('doc-tabs').getByRole('tab').nth(0).click();
  await expect(page.getByTestId('run-status')).toHaveText('succeeded');
  await expect(page.getByTestId('run-step-status-after')).toHaveText('succeeded');
  await expect(page.getByTestId('run-question')).toHaveCount(0);
});

test('an error toast stays until dismissed; a notice goes by itself', async ({ page }) => {
  await page.evaluate(() => window.nexus!.editor.getState().setMessage({ kind: 'error', text: 'Refused: test error' }));
  const toast = page.getByTestId('toast-root');
  await expect(toast).toHaveAttribute('data-kind', 'error');
  await expect(page.getByTestId('toast')).toHaveText('Refused: test error');
  await page.waitForTimeout(7000);
  await expect(page.getByTestId('toast')).toBeVisible();
  await noSeriousViolations(page);
  await page.getByTestId('toast-close').click();
  await expect(toast).toHaveCount(0);
  expect(await page.evaluate(() => window.nexus!.editor.getState().message)).toBeNull();
  // A toast waits while the pointer or the focus is on the toasts (Radix Toast moves the
  // focus to them when the focused one closes), so the user goes back to the canvas.
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.evaluate(() => window.nexus!.editor.getState().setMessage({ kind: 'info', text: 'Saved x.yaml' }));
  await expect(page.getByTestId('toast')).toHaveText('Saved x.yaml');
  await expect(toast).toHaveCount(0, { timeout: 10_000 });
});

test('the shortcut sheet lists the tab shortcuts and is accessible', async ({ page }) => {
  await page.getByTestId('shortcuts').click();
  const sheet = page.getByTestId('shortcuts-dialog');
  await expect(sheet).toContainText('A new workflow in a tab of its own');
  await expect(sheet).toContainText('show another open workflow');
  const axe = await new AxeBuilder({ page }).include('[data-testid="shortcuts-dialog"]').analyze();
  expect(axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id)).toEqual([]);
});
