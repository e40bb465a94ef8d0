import AxeBuilder from '@axe-core/playwright';
import { expect, test, type Page } from '@playwright/test';
import { parse } from 'yaml';

// Control flow, tools and agents in the editor, against the in-memory test backend
// (src/testBackend.ts): map and loop bodies drawn as groups and written back as their
// `steps:`, a switch's cases as labelled handles written as `then:`, a map run's items,
// the tool/agent/vote controls and declarations, an agent's transcript, an mcp tool's
// discovered functions.

async function loadText(page: Page, text: string) {
  await page.evaluate(async (t) => {
    await window.nexus!.editor.getState().load(null, t);
  }, text);
  await page.getByTestId('canvas').locator('.react-flow__node').first().waitFor();
  await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
}

async function serialized(page: Page): Promise<string> {
  return page.evaluate(() => window.nexus!.editor.getState().serialize());
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

const MAPPED = `id: mapped
steps:
  - id: each
    kind: map
    items: '["tea", "coffee", "water"]'
    as: drink
    position: {x: 60, y: 40}
    steps:
      - id: say
        kind: llm
        prompt: "Name {{ drink }}."
        position: {x: 24, y: 110}
      - id: rounds
        kind: loop
        needs: [say]
        max_iterations: 2
        position: {x: 24, y: 260}
        steps:
          - id: poke
            kind: template
            template: again
            position: {x: 24, y: 110}
`;

test('map and loop bodies are groups; nested bodies keep their steps and the file round-trips byte for byte', async ({ page }) => {
  await page.evaluate((t) => window.nexus!.backend.files.set('mapped.yaml', t), MAPPED);
  await page.getByTestId('open').click();
  await page.getByTestId('open-mapped.yaml').click();
  await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
  // The body's steps are drawn inside their group (xyflow sub-flows), nested too.
  const inside = async (child: string, group: string) => {
    const c = (await page.getByTestId(`node-${child}`).boundingBox())!;
    const g = (await page.getByTestId(`node-${group}`).boundingBox())!;
    return c.x >= g.x && c.y >= g.y && c.x + c.width <= g.x + g.width + 1 && c.y + c.height <= g.y + g.height + 1;
  };
  expect(await inside('say', 'each')).toBe(true);
  expect(await inside('rounds', 'each')).toBe(true);
  expect(await inside('poke', 'rounds')).toBe(true);
  await expect(page.getByTestId('group-over-each')).toHaveText('for each drink in ["tea", "coffee", "water"]');
  await expect(page.getByTestId('canvas').locator('.react-flow__edge')).toHaveCount(1);
  const parents = await page.evaluate(() => Object.fromEntries(window.nexus!.editor.getState().nodes.map((n) => [n.id, n.parentId ?? null])));
  expect(parents).toEqual({ each: null, say: 'each', rounds: 'each', poke: 'rounds' });
  // Unchanged, it is saved as it was read.
  await page.getByTestId('save').click();
  await expect(page.getByTestId('toast')).toContainText('Saved mapped.yaml');
  expect(await page.evaluate(() => window.nexus!.backend.files.get('mapped.yaml'))).toBe(MAPPED);
  // Edited elsewhere, the bodies are written back unchanged.
  await page.getByTestId('node-each').click({ position: { x: 60, y: 12 } });
  await page.getByTestId('field-concurrency').fill('2');
  await page.getByTestId('field-concurrency').blur();
  const edited = parse(await serialized(page));
  const expected = parse(MAPPED);
  expected.steps[0].concurrency = 2;
  expect(edited).toEqual(expected);
  // The group's menu adds a step to its body (keyboard too).
  await page.getByTestId('body-add-rounds').focus();
  await page.keyboard.press('Enter');
  await page.getByTestId('body-add-rounds-llm').click();
  await expect(page.getByTestId('field-id')).toHaveValue('llm_1');
  expect(await page.evaluate(() => window.nexus!.editor.getState().nodes.find((n) => n.id === 'llm_1')?.parentId)).toBe('rounds');
  expect(parse(await serialized(page)).steps[0].steps[1].steps.map((st: { id: string }) => st.id)).toEqual(['poke', 'llm_1']);
});

test('a map built from the palette: steps dropped on the group join its body, connect and delete inside it', async ({ page }) => {
  await page.evaluate(async () => {
    await window.nexus!.editor.getState().load(null, 'id: built\nsteps: []\n');
  });
  await expect(page.getByTestId('empty-state')).toBeVisible();
  await page.getByTestId('palette-map').dragTo(page.getByTestId('canvas'), { targetPosition: { x: 200, y: 80 } });
  await expect(page.getByTestId('node-map_1')).toBeVisible();
  const body = page.getByTestId('body-map_1');
  await page.getByTestId('palette-llm').dragTo(body, { targetPosition: { x: 30, y: 20 } });
  await expect(page.getByTestId('node-llm_1')).toBeVisible();
  // The group grows to hold what is dropped in it.
  const llm = (await page.getByTestId('node-llm_1').boundingBox())!;
  const box = (await body.boundingBox())!;
  await page.getByTestId('palette-template').dragTo(body, { targetPosition: { x: llm.x + llm.width - box.x + 8, y: llm.y - box.y + 4 } });
  await expect(page.getByTestId('node-template_1')).toBeVisible();
  const parents = await page.evaluate(() => Object.fromEntries(window.nexus!.editor.getState().nodes.map((n) => [n.id, n.parentId ?? null])));
  expect(parents).toEqual({ map_1: null, llm_1: 'map_1', template_1: 'map_1' });
  await dragBetween(page, 'handle-out-llm_1', 'handle-in-template_1');
  await expect(page.getByTestId('canvas').locator('.react-flow__edge')).toHaveCount(1);
  // A step outside cannot need a body's step.
  await page.getByTestId('palette-template').dragTo(page.getByTestId('canvas'), { targetPosition: { x: 700, y: 600 } });
  await expect(page.getByTestId('node-template_2')).toBeVisible();
  await dragBetween(page, 'handle-out-llm_1', 'handle-in-template_2');
  await expect(page.getByTestId('toast')).toContainText('a body\'s steps need only steps of the same body');
  await page.getByTestId('node-map_1').click({ position: { x: 60, y: 12 } });
  await page.getByTestId('field-items').fill('inputs.topics');
  await page.getByTestId('field-items').blur();
  let text = await serialized(page);
  const wf = parse(text);
  expect(wf.steps.map((st: { id: string }) => st.id)).toEqual(['map_1', 'template_2']);
  expect(wf.steps[0]).toMatchObject({ kind: 'map', items: 'inputs.topics' });
  expect(wf.steps[0].steps).toMatchObject([{ id: 'llm_1', kind: 'llm' }, { id: 'template_1', kind: 'template', needs: ['llm_1'] }]);
  expect(text).toMatch(/^ {6}- id: llm_1$/m);
  // Deleting a body's step removes it from the body; deleting the group removes its body.
  await page.getByTestId('node-template_1').click();
  await page.keyboard.press('Delete');
  await expect(page.getByTestId('node-template_1')).toHaveCount(0);
  text = await serialized(page);
  expect(text).not.toContain('template_1');
  expect(text).toContain('- id: llm_1');
  await page.getByTestId('node-map_1').click({ position: { x: 60, y: 12 } });
  await page.keyboard.press('Delete');
  await expect(page.getByTestId('node-llm_1')).toHaveCount(0);
  expect(await serialized(page)).not.toContain('llm_1');
});

test('a step dragged onto a group moves into its body, leaving its outside connections', async ({ page }) => {
  await loadText(page, `id: move
steps:
  - id: first
    kind: template
    template: one
    position: {x: 0, y: 0}
  - id: loose
    kind: template
    needs: [first]
    template: two
    position: {x: 520, y: 0}
  - id: each
    kind: map
    items: '[1, 2]'
    position: {x: 0, y: 200}
    steps: []
`);
  const node = (await page.getByTestId('node-loose').boundingBox())!;
  const body = (await page.getByTestId('body-each').boundingBox())!;
  await page.mouse.move(node.x + node.width / 2, node.y + 30);
  await page.mouse.down();
  await page.mouse.move(body.x + node.width / 2 + 10, body.y + 20, { steps: 8 });
  await page.mouse.up();
  await expect(page.getByTestId('toast')).toContainText('Moved loose into the body of each');
  expect(await page.evaluate(() => window.nexus!.editor.getState().nodes.find((n) => n.id === 'loose')?.parentId)).toBe('each');
  const wf = parse(await serialized(page));
  expect(wf.steps.map((st: { id: string }) => st.id)).toEqual(['first', 'each']);
  expect(wf.steps[1].steps).toMatchObject([{ id: 'loose', template: 'two' }]);
  expect(wf.steps[1].steps[0].needs).toBeUndefined();
});

test('a switch shows its cases as labelled handles; connecting from one writes that case\'s targets', async ({ page }) => {
  await loadText(page, `id: routed
steps:
  - id: fix
    kind: template
    template: fix it
    position: {x: 0, y: 300}
  - id: plan
    kind: template
    template: plan it
    position: {x: 260, y: 300}
  - id: shrug
    kind: template
    template: nothing
    position: {x: 520, y: 300}
`);
  await page.getByTestId('palette-switch').dragTo(page.getByTestId('canvas'), { targetPosition: { x: 300, y: 60 } });
  await page.getByTestId('node-switch_1').click();
  await page.getByTestId('case-name-0').fill('bug');
  await page.getByTestId('case-name-0').blur();
  await page.getByTestId('case-when-0').fill('inputs.kind == "bug"');
  await page.getByTestId('case-when-0').blur();
  await page.getByTestId('case-add').click();
  await page.getByTestId('case-name-1').fill('feature');
  await page.getByTestId('case-name-1').blur();
  await page.getByTestId('case-when-1').fill('inputs.kind == "feature"');
  await page.getByTestId('case-when-1').blur();
  // One handle per case and one for default, each with its label.
  await expect(page.getByTestId('case-label-switch_1-case-0')).toHaveText('bug');
  await expect(page.getByTestId('case-label-switch_1-case-1')).toHaveText('feature');
  await expect(page.getByTestId('case-label-switch_1-default')).toHaveText('default');
  await page.getByTestId('canvas').locator('.react-flow__controls-fitview').click();
  await dragBetween(page, 'handle-case-switch_1-0', 'handle-in-fix');
  await dragBetween(page, 'handle-case-switch_1-1', 'handle-in-plan');
  await dragBetween(page, 'handle-default-switch_1', 'handle-in-shrug');
  await expect(page.getByTestId('canvas').locator('.react-flow__edge')).toHaveCount(3);
  const text = await serialized(page);
  expect(text).toMatch(/name: bug[\s\S]*then:[\s\S]*fix/);
  expect(text).toMatch(/name: feature[\s\S]*then:[\s\S]*plan/);
  expect(text).toMatch(/default:[\s\S]*shrug/);
  // The case's targets are shown in the inspector, and removing a case removes its edge.
  await page.getByTestId('node-switch_1').click();
  await expect(page.getByTestId('case-then-0')).toContainText('fix');
  await page.getByTestId('case-remove-0').click();
  await expect(page.getByTestId('canvas').locator('.react-flow__edge')).toHaveCount(2);
  await expect(page.getByTestId('case-label-switch_1-case-0')).toHaveText('feature');
  const after = await serialized(page);
  expect(after).not.toContain('name: bug');
  expect(after).toMatch(/name: feature[\s\S]*then:[\s\S]*plan/);
});

test('an item of a finished map run opens with its steps: input, output, model, attempts', async ({ page }) => {
  await loadText(page, MAPPED);
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 20_000 });
  await expect(page.getByTestId('progress-each')).toHaveText('3/3 done');
  // The run panel: the map's row, its item picker, the picked item's steps by path.
  await expect(page.getByTestId('run-items-each')).toContainText('3 items');
  await expect(page.getByTestId('run-row-each[0].say')).toBeVisible();
  await page.getByTestId('run-item-each').click();
  await page.getByTestId('run-item-each-option-2').click();
  await expect(page.getByTestId('run-row-each[0].say')).toHaveCount(0);
  await page.getByTestId('run-row-each[2].say').click();
  await expect(page.getByTestId('step-detail')).toContainText('each[2].say');
  await expect(page.getByTestId('detail-input')).toHaveText('Name {{ drink }}.');
  await expect(page.getByTestId('detail-output')).toHaveText('Hello from each[2].say');
  await expect(page.getByTestId('detail-model')).toHaveText('embedded:smollm2-135m-instruct');
  await expect(page.getByTestId('detail-attempts').locator('li')).toHaveCount(1);
  // The nested loop's iterations under the picked item.
  await expect(page.getByTestId('run-items-each[2].rounds')).toContainText('2 iterations');
  await expect(page.getByTestId('run-row-each[2].rounds[0].poke')).toBeVisible();
  // The group on the canvas shows the same item: its body's nodes have that item's status.
  await expect(page.getByTestId('group-item-each')).toHaveText('item 2');
  await expect(page.getByTestId('status-say')).toHaveText('succeeded');
  await expect(page.getByTestId('tokens-say')).toHaveText('Hello from each[2].say');
  await page.getByTestId('group-item-each').click();
  await page.getByTestId('group-item-each-option-1').click();
  await expect(page.getByTestId('tokens-say')).toHaveText('Hello from each[1].say');
  await expect(page.getByTestId('run-row-each[1].say')).toBeVisible();
  // The groups, their pickers and the nested rows have no serious accessibility violation.
  const axe = await new AxeBuilder({ page }).analyze();
  expect(axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
  // A body's step completes the item it reads.
  await page.getByTestId('node-say').click();
  await expect(page.getByTestId('insert-drink')).toBeVisible();
  await expect(page.getByTestId('insert-index')).toBeVisible();
});

const TOOLED = `id: tooled
tools:
  notes: {file: {workspace: notes}}
  fs: {mcp: {command: [npx, -y, server-filesystem, data]}}
  broken: {mcp: {command: [fail-server]}}
agents:
  lead: {description: The lead, system: You decide.}
steps:
  - id: helper
    kind: agent
    prompt: Read today's notes.
    tools: [notes]
    position: {x: 60, y: 40}
`;

test('tool, agent and vote steps have real controls; tools and agents are declared in the workflow settings', async ({ page }) => {
  await loadText(page, TOOLED);
  for (const kind of ['tool', 'agent', 'vote']) await expect(page.getByTestId(`palette-${kind}`)).toBeVisible();
  // The declarations, with no step selected.
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.getByTestId('wf-section-toggle-tools').click();
  await expect(page.getByTestId('tool-kind-notes')).toHaveText('file');
  await expect(page.getByTestId('tool-notes-workspace')).toHaveValue('notes');
  await page.getByTestId('tool-add').click();
  await page.getByTestId('tool-kind-tool_1').click();
  await page.getByTestId('tool-kind-tool_1-option-http').click();
  await page.getByTestId('tool-tool_1-url').fill('http://127.0.0.1:8080/api/');
  await page.getByTestId('tool-tool_1-url').blur();
  await page.getByTestId('tool-name-tool_1').fill('listings');
  await page.keyboard.press('Tab');
  await page.getByTestId('agent-add').click();
  await page.getByTestId('agent-agent_1-system').fill('You check facts.');
  await page.getByTestId('agent-agent_1-system').blur();
  let text = await serialized(page);
  expect(text).toMatch(/listings:\s+http:\s+url: http:\/\/127\.0\.0\.1:8080\/api\//);
  expect(text).toMatch(/agent_1:\s+system: You check facts\./);
  // A tool step picks a declared tool.
  await page.getByTestId('palette-tool').focus();
  await page.keyboard.press('Enter');
  await page.getByTestId('field-tool').click();
  await page.getByTestId('field-tool-option-listings').click();
  await page.getByTestId('field-args').click();
  await page.keyboard.type('path: listings');
  await page.getByTestId('field-id').click();
  // An agent step checks the tools it may call and picks an agent.
  await page.keyboard.press('Control+k');
  await page.getByTestId('search-input').fill('helper');
  await page.getByTestId('search-find-helper').click();
  await expect(page.getByTestId('section-tools')).toBeVisible();
  await page.getByTestId('field-tools-listings').click();
  await page.getByTestId('field-agent').click();
  await page.getByTestId('field-agent-option-lead').click();
  // A vote: choices one a line, voters as cards.
  await page.getByTestId('palette-vote').focus();
  await page.keyboard.press('Enter');
  await page.getByTestId('field-choices').fill('ship\nwait');
  await page.getByTestId('field-choices').blur();
  await page.getByTestId('voter-add').click();
  await page.getByTestId('voter-0-agent').click();
  await page.getByTestId('voter-0-agent-option-lead').click();
  await page.getByTestId('voter-0-weight').fill('2');
  await page.getByTestId('voter-0-weight').blur();
  await page.getByTestId('field-rule').click();
  await page.getByTestId('field-rule-option-supermajority').click();
  text = await serialized(page);
  expect(text).toMatch(/- id: tool_1\n\s+kind: tool\n[\s\S]*tool: listings\n\s+args:\s+path: listings/);
  expect(text).toMatch(/- id: helper[\s\S]*tools: \[ notes, listings \][\s\S]*agent: lead/);
  expect(text).toMatch(/- id: vote_1\n\s+kind: vote\n[\s\S]*choices: \[ ship, wait \]/);
  expect(text).toMatch(/voters:\s+- name: voter_1\s+agent: lead\s+weight: 2/);
  expect(text).toContain('rule: supermajority');
  const axe = await new AxeBuilder({ page }).include('[data-testid="inspector"]').analyze();
  expect(axe.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id)).toEqual([]);
});

test('an mcp tool lists its server\'s functions after discovery, and says why discovery failed', async ({ page }) => {
  await page.evaluate((t) => window.nexus!.backend.files.set('tooled.yaml', t), TOOLED);
  await page.getByTestId('open').click();
  await page.getByTestId('open-tooled.yaml').click();
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.getByTestId('wf-section-toggle-tools').click();
  await page.getByTestId('tool-discover-fs').click();
  await expect(page.getByTestId('tool-function-fs-read_text_file')).toContainText('Read a file as text.');
  await expect(page.getByTestId('tool-functions-fs').locator('li')).toHaveCount(3);
  await expect(page.getByTestId('tool-function-fs-write_file')).toContainText('fs__write_file');
  await page.getByTestId('tool-discover-broken').click();
  await expect(page.getByTestId('tool-discover-error-broken')).toContainText('Discovery failed: tool `broken`: the MCP server closed the connection');
  // A file tool has nothing to discover.
  await expect(page.getByTestId('tool-discover-notes')).toHaveCount(0);
  // A tool step calling the mcp tool discovers what it may `call`.
  await page.getByTestId('palette-tool').focus();
  await page.keyboard.press('Enter');
  await page.getByTestId('field-tool').click();
  await page.getByTestId('field-tool-option-fs').click();
  await page.getByTestId('tool-discover-fs').click();
  await expect(page.getByTestId('tool-function-fs-list_directory')).toBeVisible();
  // An unsaved workflow cannot be discovered: the backend reads the saved file.
  await page.evaluate(async (t) => {
    await window.nexus!.editor.getState().load(null, t);
  }, TOOLED);
  await page.getByTestId('canvas').click({ position: { x: 5, y: 5 } });
  await page.getByTestId('wf-section-toggle-tools').click();
  await page.getByTestId('tool-discover-fs').click();
  await expect(page.getByTestId('tool-discover-error-fs')).toContainText('Save the workflow first');
});

test('an agent step\'s transcript shows in the run panel: model calls and tool calls', async ({ page }) => {
  await loadText(page, TOOLED);
  await page.getByTestId('run').click();
  await page.getByTestId('run-start').click();
  await expect(page.getByTestId('run-status')).toHaveText('succeeded', { timeout: 20_000 });
  await page.getByTestId('run-row-helper').click();
  const transcript = page.getByTestId('transcript');
  await expect(transcript.locator('> li')).toHaveCount(3);
  await expect(page.getByTestId('transcript-model-0')).toContainText('model call 1');
  await expect(page.getByTestId('transcript-model-0-model')).toHaveText('embedded:smollm2-135m-instruct');
  await expect(page.getByTestId('transcript-model-0')).toContainText('40 in, 12 out');
  await expect(page.getByTestId('transcript-tool-1-name')).toHaveText('notes');
  await expect(page.getByTestId('transcript-tool-1-args')).toContainText('"op": "list"');
  await expect(page.getByTestId('transcript-tool-1-result')).toHaveText('monday.md\ntuesday.md');
  await expect(page.getByTestId('transcript-model-2-text')).toContainText('final');
});

test('every example workflow keeps its bodies, cases and dependencies through an edit', async ({ page }) => {
  const names = await page.evaluate(() => [...window.nexus!.backend.files.keys()]);
  expect(names.length).toBeGreaterThan(3);
  for (const name of names) {
    const original = await page.evaluate((n) => window.nexus!.backend.files.get(n)!, name);
    await page.evaluate(async (t) => {
      await window.nexus!.editor.getState().load(null, t);
      window.nexus!.editor.setState({ dirty: true });
    }, original);
    const edited = parse(await serialized(page));
    // Only positions may be added (a file without them is laid out once).
    const strip = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(strip) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'position').map(([k, x]) => [k, strip(x)])) : v;
    expect(strip(edited), name).toEqual(strip(parse(original)));
  }
});
